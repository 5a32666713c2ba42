// Numbers each new account `<prefix>-<n>`: the prefix comes from the step's unsecure
// configuration (default `ACC`), `n` follows the highest number in use. Registered on
// Create of `account`, post-operation, async (the JavaScript twin of
// sample-plugins/account-number).
import { BusinessError, Output, condition, config, plugin, records, trace } from 'sluice-sdk';

export const handler = plugin((ctx) => {
  if (!ctx.recordId) throw new BusinessError('account-number runs on a record');
  const prefix = config.unsecure() ?? 'ACC';
  const numbered = records.query('account', {
    where: [condition('accountnumber', 'is-not-null')],
    columns: ['accountnumber'],
  });
  let highest = 0;
  for (const account of numbered) {
    const tail = String(account.get('accountnumber')).split('-').pop();
    if (/^\d+$/.test(tail)) highest = Math.max(highest, Number(tail));
  }
  const number = `${prefix}-${String(highest + 1).padStart(6, '0')}`;
  trace(`${numbered.length} accounts numbered; ${ctx.recordId} becomes ${number}`);
  records.update('account', ctx.recordId, { accountnumber: number });
  return new Output({ accountnumber: number });
});
