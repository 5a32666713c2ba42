//! Increments `touches` on the record that triggered it. Registered on Update of the
//! same entity, every run fires another Update one level deeper: the loop that loop
//! detection must stop.

use sluice_sdk::{Context, Error, Output, Plugin, records, trace};

struct TouchCounter;

impl Plugin for TouchCounter {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let id = ctx.record_id.clone().ok_or_else(|| Error::business("touch-counter runs on a record"))?;
        let record = records::retrieve(&ctx.entity, &id, &["touches".into()])
            .map_err(|e| Error::transient(format!("retrieve failed: {e:?}")))?;
        let touches = record.integer("touches").unwrap_or(0) + 1;
        trace!("depth {}: touches {touches}", ctx.depth);
        records::update(&ctx.entity, &id, &[("touches", touches).into()])
            .map_err(|e| Error::transient(format!("update failed: {e:?}")))?;
        Ok(Output::new().with("touches", touches))
    }
}

sluice_sdk::export_plugin!(TouchCounter);
