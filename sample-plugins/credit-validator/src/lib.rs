//! Refuses an account whose credit limit is negative or whose name is missing, with a
//! business error (Dataverse's `InvalidPluginExecutionException`). Registered on
//! Create/Update of `account`, pre-validation, sync.

use sluice_sdk::{Context, Error, Output, Plugin, Value};

struct CreditValidator;

impl Plugin for CreditValidator {
    fn execute(ctx: Context) -> Result<Output, Error> {
        let account = ctx.target().ok_or_else(|| Error::business("credit-validator needs the account"))?;
        if account.string("name").is_none_or(|n| n.trim().is_empty()) {
            return Err(Error::business("An account needs a name."));
        }
        if let Some(limit) = account.get("creditlimit").and_then(Value::as_f64)
            && limit < 0.0
        {
            return Err(Error::business(format!("Credit limit cannot be negative (got {limit:.2}).")));
        }
        Ok(Output::new().with("valid", true))
    }
}

sluice_sdk::export_plugin!(CreditValidator);
