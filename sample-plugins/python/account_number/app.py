"""Numbers each new account `<prefix>-<n>`: the prefix comes from the step's unsecure
configuration (default `ACC`), `n` follows the highest number in use. Registered on
Create of `account`, post-operation, async (the Python twin of
sample-plugins/account-number)."""

from sluice_sdk import BusinessError, Condition, Output, plugin, records, trace, config


@plugin
def execute(ctx):
    if ctx.record_id is None:
        raise BusinessError("account-number runs on a record")
    prefix = config.unsecure() or "ACC"
    numbered = records.query(
        "account", where=[Condition("accountnumber", "is-not-null")], columns=["accountnumber"]
    )
    highest = 0
    for account in numbered:
        tail = str(account.get("accountnumber")).rsplit("-", 1)[-1]
        if tail.isdigit():
            highest = max(highest, int(tail))
    number = f"{prefix}-{highest + 1:06d}"
    trace(f"{len(numbered)} accounts numbered; {ctx.record_id} becomes {number}")
    records.update("account", ctx.record_id, {"accountnumber": number})
    return Output(accountnumber=number)
