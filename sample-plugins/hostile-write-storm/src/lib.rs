//! Hostile: creates records in an endless loop, each of which would fire an event.
//! Must end as `RecordWriteLimitExceeded` long before it floods anything.

use sluice_sdk::{Context, Error, Output, Plugin, records};

struct WriteStorm;

impl Plugin for WriteStorm {
    fn execute(_: Context) -> Result<Output, Error> {
        let mut n: i64 = 0;
        loop {
            // Errors are ignored on purpose: a storm does not stop to read them.
            let _ = records::create("task", &[("subject", "storm").into(), ("n", n).into()]);
            n += 1;
        }
    }
}

sluice_sdk::export_plugin!(WriteStorm);
