//! Routes a lead to an owner by its country. The routing table is the step's unsecure
//! configuration, `COUNTRY=user;...;*=fallback`, e.g. `US=alice;DE=bertha;*=carol`.
//! Sets `ownerid` (an entity reference to `systemuser`) on the lead.

use sluice_sdk::{Context, EntityReference, Error, Output, Plugin, Value, records, trace};

struct LeadRouter;

fn route<'a>(table: &'a str, country: &str) -> Option<&'a str> {
    let mut fallback = None;
    for rule in table.split(';') {
        let (key, owner) = rule.split_once('=')?;
        if key.trim().eq_ignore_ascii_case(country) {
            return Some(owner.trim());
        }
        if key.trim() == "*" {
            fallback = Some(owner.trim());
        }
    }
    fallback
}

impl Plugin for LeadRouter {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let lead = ctx.target().ok_or_else(|| Error::business("lead-router needs the lead's post-image"))?;
        let table = sluice_sdk::config::unsecure()
            .ok_or_else(|| Error::business("lead-router has no routing table configured"))?;
        let country = lead.string("country").unwrap_or("");
        let Some(owner) = route(&table, country) else {
            return Err(Error::business(format!("no owner for country '{country}' and no '*' rule")));
        };
        trace!("lead {} from '{country}' goes to {owner}", lead.id);
        let reference = Value::EntityReference(EntityReference {
            entity: "systemuser".into(),
            id: owner.into(),
            name: None,
        });
        records::update("lead", &lead.id, &[("ownerid", reference).into()])
            .map_err(|e| Error::transient(format!("update failed: {e:?}")))?;
        Ok(Output::new().with("owner", owner))
    }
}

sluice_sdk::export_plugin!(LeadRouter);
