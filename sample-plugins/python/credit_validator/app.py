"""Refuses an account whose credit limit is negative or whose name is missing, with a
business error (Dataverse's InvalidPluginExecutionException). Registered on
Create/Update of `account`, pre-validation, sync (the Python twin of
sample-plugins/credit-validator)."""

from decimal import Decimal

from sluice_sdk import BusinessError, Output, plugin


@plugin
def execute(ctx):
    account = ctx.record
    if account is None:
        raise BusinessError("credit-validator needs the account")
    name = account.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BusinessError("An account needs a name.")
    limit = account.get("creditlimit")
    if isinstance(limit, (int, Decimal)) and not isinstance(limit, bool) and limit < 0:
        raise BusinessError(f"Credit limit cannot be negative (got {Decimal(limit):.2f}).")
    return Output(valid=True)
