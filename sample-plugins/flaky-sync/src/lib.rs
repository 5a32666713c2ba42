//! Talks to a dependency that is busy the first N attempts (N from the unsecure
//! configuration, default 2), then succeeds. Attempts are counted on a
//! `flaky_attempt` record named by the correlation id, so they survive retries.

use sluice_sdk::records::{self, RecordError};
use sluice_sdk::{Context, Error, Output, Plugin, trace};

struct FlakySync;

impl Plugin for FlakySync {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let failures: i64 = sluice_sdk::config::unsecure().and_then(|c| c.trim().parse().ok()).unwrap_or(2);
        let id = ctx.correlation_id.clone();
        let attempt = match records::retrieve("flaky_attempt", &id, &[]) {
            Ok(record) => record.integer("count").unwrap_or(0) + 1,
            Err(RecordError::NotFound(_)) => 1,
            Err(e) => return Err(Error::transient(format!("cannot count attempts: {e:?}"))),
        };
        let counter = [("count", attempt).into()];
        let stored = if attempt == 1 {
            records::create("flaky_attempt", &[("id", id.as_str()).into(), ("count", attempt).into()])
                .map(|_| ())
        } else {
            records::update("flaky_attempt", &id, &counter)
        };
        stored.map_err(|e| Error::transient(format!("cannot count attempts: {e:?}")))?;
        if attempt <= failures {
            trace!("attempt {attempt}: the dependency is busy");
            return Err(Error::transient(format!(
                "dependency busy (attempt {attempt} of {failures} failing)"
            )));
        }
        trace!("attempt {attempt}: synced");
        Ok(Output::new().with("attempts", attempt))
    }
}

sluice_sdk::export_plugin!(FlakySync);
