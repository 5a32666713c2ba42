//! A plug-in sees and changes only the records of the organisation it runs for.

use sluice::records::{RecordStore, Value};
use sluice_sample_plugins as samples;

use crate::support::{entity, on_record, run};

#[tokio::test]
async fn a_plugin_running_for_one_org_cannot_see_or_touch_another_orgs_records() {
    let records =
        crate::support::store(vec![entity("account", "a1", &[("accountnumber", "ACC-000500".into())])]);
    // The same account id exists in org "fabrikam"; the plug-in runs for fabrikam.
    records.create("fabrikam", "account", crate::support::attrs(&[("id", "a1".into())])).unwrap();
    let mut context = on_record("Create", &entity("account", "a1", &[]));
    context.org_id = "fabrikam".into();
    let run = run(samples::ACCOUNT_NUMBER, context, &records, Some("FAB")).await;
    // Org local's ACC-000500 is invisible: fabrikam's numbering starts at 1.
    assert_eq!(run.outcome.unwrap().output_parameters["accountnumber"], Value::from("FAB-000001"));
    let local = records.retrieve("local", "account", "a1", &[]).unwrap();
    assert_eq!(local.attributes["accountnumber"], Value::from("ACC-000500"), "org local untouched");
}
