//! Writes an audit trail of the event to the trace log: one line per attribute of the
//! images and inputs, repeated `rounds` times (input parameter, default 1). A large
//! trail shows the trace log keeping its newest lines within its size limit.

use sluice_sdk::{Attribute, Context, Error, Output, Plugin, trace};

struct AuditTrail;

fn describe(attributes: &[Attribute], what: &str, round: i64) -> usize {
    for a in attributes {
        trace!("round {round} {what}.{} = {:?}", a.name, a.value);
    }
    attributes.len()
}

impl Plugin for AuditTrail {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let rounds = ctx.input("rounds").and_then(|v| v.as_integer()).unwrap_or(1);
        let mut lines = 0;
        for round in 1..=rounds {
            trace!("round {round}: {} {} {:?} depth {}", ctx.message, ctx.entity, ctx.record_id, ctx.depth);
            lines += 1;
            lines += describe(&ctx.input_parameters, "input", round);
            if let Some(pre) = &ctx.pre_image {
                lines += describe(&pre.attributes, "pre", round);
            }
            if let Some(post) = &ctx.post_image {
                lines += describe(&post.attributes, "post", round);
            }
        }
        Ok(Output::new().with("lines", lines as i64))
    }
}

sluice_sdk::export_plugin!(AuditTrail);
