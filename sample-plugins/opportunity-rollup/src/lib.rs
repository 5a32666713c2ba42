//! Keeps `account.totalopportunityvalue` (money) equal to the sum of `estimatedvalue` over
//! the account's open opportunities. Registered on Create/Update of `opportunity`.

use sluice_sdk::records::{self, Condition, Filter, Operator};
use sluice_sdk::{Context, Decimal, Error, Output, Plugin, Value, trace};

struct Rollup;

/// Sums decimals exactly, at the largest scale among them.
fn sum(values: &[Decimal]) -> Decimal {
    let scale = values.iter().map(|d| d.scale).max().unwrap_or(2);
    let units = values.iter().map(|d| d.units * 10i64.pow(u32::from(scale - d.scale))).sum();
    Decimal { units, scale }
}

impl Plugin for Rollup {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let opportunity =
            ctx.target().ok_or_else(|| Error::business("rollup needs the opportunity's post-image"))?;
        let Some(Value::EntityReference(account)) = opportunity.get("parentaccountid") else {
            trace!("opportunity {} has no parent account; nothing to roll up", opportunity.id);
            return Ok(Output::new());
        };
        let open = records::query(&Filter {
            entity: "opportunity".into(),
            columns: vec!["estimatedvalue".into()],
            conditions: vec![
                Condition {
                    attribute: "parentaccountid".into(),
                    operator: Operator::Equal,
                    value: Value::EntityReference(account.clone()),
                },
                Condition {
                    attribute: "statecode".into(),
                    operator: Operator::Equal,
                    value: Value::OptionSet(0),
                },
            ],
            top: None,
        })
        .map_err(|e| Error::transient(format!("query failed: {e:?}")))?;
        let amounts: Vec<Decimal> = open
            .iter()
            .filter_map(|o| match o.get("estimatedvalue") {
                Some(Value::Money(d)) | Some(Value::Decimal(d)) => Some(*d),
                _ => None,
            })
            .collect();
        let total = sum(&amounts);
        trace!("{} open opportunities on account {}", open.len(), account.id);
        records::update("account", &account.id, &[("totalopportunityvalue", Value::Money(total)).into()])
            .map_err(|e| Error::transient(format!("update failed: {e:?}")))?;
        Ok(Output::new().with("total", Value::Money(total)).with("count", open.len() as i64))
    }
}

sluice_sdk::export_plugin!(Rollup);
