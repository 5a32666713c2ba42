//! Numbers each new account: `<prefix>-<n>`, where the prefix comes from the step's
//! unsecure configuration (default `ACC`) and `n` follows the highest number in use.
//! Registered on Create of `account`, post-operation, async.

use sluice_sdk::records::{self, Condition, Filter, Operator};
use sluice_sdk::{Context, Error, Output, Plugin, Value, trace};

struct AccountNumber;

impl Plugin for AccountNumber {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let id = ctx.record_id.clone().ok_or_else(|| Error::business("account-number runs on a record"))?;
        let prefix = sluice_sdk::config::unsecure().unwrap_or_else(|| "ACC".into());
        let numbered = records::query(&Filter {
            entity: "account".into(),
            columns: vec!["accountnumber".into()],
            conditions: vec![Condition {
                attribute: "accountnumber".into(),
                operator: Operator::IsNotNull,
                value: Value::Null,
            }],
            top: None,
        })
        .map_err(|e| Error::transient(format!("query failed: {e:?}")))?;
        let highest = numbered
            .iter()
            .filter_map(|a| a.string("accountnumber"))
            .filter_map(|n| n.rsplit('-').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let number = format!("{prefix}-{:06}", highest + 1);
        trace!("{} accounts numbered; {id} becomes {number}", numbered.len());
        records::update("account", &id, &[("accountnumber", number.as_str()).into()])
            .map_err(|e| Error::transient(format!("update failed: {e:?}")))?;
        Ok(Output::new().with("accountnumber", number))
    }
}

sluice_sdk::export_plugin!(AccountNumber);
