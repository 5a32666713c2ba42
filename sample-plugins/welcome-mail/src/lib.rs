//! Queues a welcome e-mail for a new contact: creates an `email` record (to, subject,
//! body, the contact it is about). Creating an `email` record is a send-email request:
//! the org's sender (an async step on Create of `email`) runs as an e-mail job on the
//! exempt lane.

use sluice_sdk::{Context, EntityReference, Error, Output, Plugin, Value, records, trace};

struct WelcomeMail;

impl Plugin for WelcomeMail {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let contact = ctx.target().ok_or_else(|| Error::business("welcome-mail runs on a new contact"))?;
        let Some(to) = contact.string("emailaddress1") else {
            trace!("no e-mail address: nothing to send");
            return Ok(Output::new().with("queued", false));
        };
        let name = contact.string("fullname").unwrap_or("there");
        let regarding = EntityReference {
            entity: ctx.entity.clone(),
            id: ctx.record_id.clone().unwrap_or_default(),
            name: Some(name.to_owned()),
        };
        let subject = format!("Welcome, {name}");
        let id = records::create(
            "email",
            &[
                ("to", to).into(),
                ("subject", subject.as_str()).into(),
                ("body", "Thank you for signing up.").into(),
                ("regardingobjectid", Value::EntityReference(regarding)).into(),
            ],
        )
        .map_err(|e| Error::transient(format!("queueing the e-mail failed: {e:?}")))?;
        trace!("queued e-mail {id} to {to}");
        Ok(Output::new().with("queued", true).with("email", id.as_str()))
    }
}

sluice_sdk::export_plugin!(WelcomeMail);
