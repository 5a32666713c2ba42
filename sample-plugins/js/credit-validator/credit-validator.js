// Refuses an account whose credit limit is negative or whose name is missing, with a
// business error (Dataverse's InvalidPluginExecutionException). Registered on
// Create/Update of `account`, pre-validation, sync (the JavaScript twin of
// sample-plugins/credit-validator).
import { BusinessError, Decimal, Output, plugin } from 'sluice-sdk';

export const handler = plugin((ctx) => {
  const account = ctx.record;
  if (!account) throw new BusinessError('credit-validator needs the account');
  const name = account.get('name');
  if (typeof name !== 'string' || !name.trim()) throw new BusinessError('An account needs a name.');
  const limit = account.get('creditlimit');
  const amount = limit instanceof Decimal ? limit.toNumber() : typeof limit === 'number' ? limit : null;
  if (amount !== null && amount < 0) throw new BusinessError(`Credit limit cannot be negative (got ${amount.toFixed(2)}).`);
  return new Output({ valid: true });
});
