//! The HTTP API, over HTTP only: every route's happy path, another org's ids answering
//! 404 everywhere, bad input answering 4xx with stable codes, and the OpenAPI document
//! matching the routes.

use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::callbacks::CallbackSettings;
use sluice_sample_plugins as samples;

use crate::http::{Reply, Tenant, TestServer};

fn terminal(job: &Json) -> bool {
    job["status"].as_u64().is_some_and(|s| s >= 30)
}

/// Org setup shared by the tests: plug-ins, an async step, a workflow, a custom API.
struct Objects {
    plugin: u64,
    step: u64,
    workflow: u64,
    job: u64,
    operation: String,
}

async fn objects(server: &TestServer, tenant: &Tenant) -> Objects {
    let plugin = server.upload(tenant, samples::ACCOUNT_NUMBER, "account-number").await;
    let echo = server.upload(tenant, samples::ECHO, "echo").await;
    let step = server
        .post(
            "/steps",
            &tenant.token,
            json!({"name": "number accounts", "plugin": plugin, "message": "Create", "entity": "account"}),
        )
        .await;
    assert_eq!(step.status, 201, "{step:?}");
    let workflow = server
        .post(
            "/workflows",
            &tenant.token,
            json!({"name": "audit", "trigger": {"message": "Update", "entity": "account"},
                   "steps": [{"plugin": echo}]}),
        )
        .await;
    assert_eq!(workflow.status, 201, "{workflow:?}");
    let api = server
        .post(
            "/custom-apis",
            &tenant.token,
            json!({"name": "contoso_Echo", "plugin": echo,
                   "parameters": [{"name": "Text", "type": "string"}, {"name": "Count", "type": "integer", "optional": true}]}),
        )
        .await;
    assert_eq!(api.status, 201, "{api:?}");
    let event = server
        .post(
            "/events",
            &tenant.token,
            json!({"message": "Create", "entity": "account", "attributes": {"name": "Contoso"}}),
        )
        .await;
    assert_eq!(event.status, 200, "{event:?}");
    let job = event.json["jobs"][0].as_u64().unwrap();
    let operation = server
        .post(
            "/background-operations",
            &tenant.token,
            json!({"request": {"name": "contoso_Echo", "parameters": {"Text": "hi"}}}),
        )
        .await;
    assert_eq!(operation.status, 202, "{operation:?}");
    Objects {
        plugin,
        step: step.json["id"].as_u64().unwrap(),
        workflow: workflow.json["id"].as_u64().unwrap(),
        job,
        operation: operation.json["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_its_happy_path() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let op = server.operator.clone();
    let tenant = server.tenant("contoso").await;
    let orgs = server.get("/orgs", &op).await;
    assert_eq!(orgs.json[0]["name"], "contoso");

    // Tokens: a second one is listed by prefix, revoked, then refused.
    let second = server.post(&format!("/orgs/{}/tokens", tenant.org), &op, json!({"label": "ci"})).await;
    let second_token = second.json["token"].as_str().unwrap().to_owned();
    assert!(second_token.starts_with("slu_"));
    let tokens = server.get(&format!("/orgs/{}/tokens", tenant.org), &op).await;
    assert_eq!(tokens.json.as_array().unwrap().len(), 2);
    assert!(tokens.json[1].get("token").is_none(), "a listed token shows its prefix only");
    assert_eq!(server.get("/org", &second_token).await.status, 200);
    let revoked = server
        .send(Method::DELETE, &format!("/orgs/{}/tokens/{}", tenant.org, second.json["id"]), &op, None)
        .await;
    assert_eq!(revoked.status, 204);
    assert_eq!(server.get("/org", &second_token).await.code(), "unauthorized");

    // Quotas: the operator sets them, the tenant reads them.
    let set = server
        .send(
            Method::PUT,
            &format!("/orgs/{}/quotas/regular", tenant.org),
            &op,
            Some(json!({"max-threads": 2, "max-throughput": 50})),
        )
        .await;
    assert_eq!(set.status, 200, "{set:?}");
    let quotas = server.get(&format!("/orgs/{}/quotas", tenant.org), &op).await;
    assert_eq!(quotas.json[1]["quotas"]["max-threads"], 2);
    let own = server.get("/quotas", &tenant.token).await;
    assert_eq!(own.json[1]["quotas"]["max-throughput"], 50);
    assert_eq!(own.json[0]["lane"], "priority");
    let org = server.get("/org", &tenant.token).await;
    assert!(org.json["webhook_secret"].as_str().unwrap().starts_with("whsec_"));

    let o = objects(&server, &tenant).await;
    let plugins = server.get("/plugins", &tenant.token).await;
    assert_eq!(plugins.json.as_array().unwrap().len(), 2);
    assert_eq!(server.upload(&tenant, samples::ACCOUNT_NUMBER, "again").await, o.plugin, "content-addressed");

    // Steps.
    assert_eq!(server.get("/steps", &tenant.token).await.json[0]["id"], o.step);
    assert_eq!(
        server.get(&format!("/steps/{}", o.step), &tenant.token).await.json["spec"]["mode"],
        "asynchronous"
    );

    // Workflows: Draft, a new version, activate, deactivate.
    let path = format!("/workflows/{}", o.workflow);
    assert_eq!(server.get(&path, &tenant.token).await.json["active"], false);
    let versioned = server
        .send(Method::PUT, &path, &tenant.token, Some(json!({"trigger": {"message": "Update", "entity": "account", "filtering_attributes": ["name"]}, "steps": [{"plugin": o.plugin}]})))
        .await;
    assert_eq!(versioned.json["spec"]["version"], 2, "{versioned:?}");
    assert_eq!(server.post(&format!("{path}/activate"), &tenant.token, json!({})).await.json["active"], true);
    assert_eq!(server.get("/workflows", &tenant.token).await.json.as_array().unwrap().len(), 1);

    // Events: the async step's job runs; a batch fires many events at once.
    let job = server.wait_for(&format!("/jobs/{}", o.job), &tenant.token, terminal).await;
    assert_eq!(job["status_name"], "succeeded", "{job}");
    assert_eq!(job["operation"], "async-plugin");
    let trace = server.get(&format!("/jobs/{}/trace", o.job), &tenant.token).await;
    assert!(trace.json["accounting"]["fuel_used"].as_u64().unwrap() > 0, "{trace:?}");
    let batch = server
        .post(
            "/events/batch",
            &tenant.token,
            json!({"events": [
                {"message": "Create", "entity": "account", "attributes": {"name": "A"}},
                {"message": "Create", "entity": "account", "attributes": {"name": "B"}}]}),
        )
        .await;
    assert_eq!(batch.json.as_array().unwrap().len(), 2, "{batch:?}");
    let update = server
        .post("/events", &tenant.token, json!({"message": "Update", "entity": "account", "record_id": batch.json[0]["record_id"], "attributes": {"name": "A2"}}))
        .await;
    assert_eq!(
        update.json["jobs"].as_array().unwrap().len(),
        1,
        "the activated workflow started: {update:?}"
    );
    assert_eq!(
        server.post(&format!("{path}/deactivate"), &tenant.token, json!({})).await.json["active"],
        false
    );

    // Jobs with filters.
    let all = server.get("/jobs?limit=50", &tenant.token).await;
    assert!(all.json.as_array().unwrap().len() >= 4, "{all:?}");
    let workflows = server.get("/jobs?lane=regular&status=0", &tenant.token).await;
    assert!(workflows.json.as_array().unwrap().iter().all(|j| j["lane"] == "regular" && j["status"] == 0));
    let correlated = server
        .get(&format!("/jobs?correlation={}", update.json["correlation_id"].as_str().unwrap()), &tenant.token)
        .await;
    assert_eq!(correlated.json[0]["id"], update.json["jobs"][0]);
    let by_definition = server.get(&format!("/jobs?definition={}", o.step), &tenant.token).await;
    assert!(by_definition.json.as_array().unwrap().iter().all(|j| j["definition"] == o.step));

    // Custom API, run synchronously.
    let run = server
        .post("/custom-apis/contoso_Echo/run", &tenant.token, json!({"parameters": {"Text": "hello"}}))
        .await;
    assert_eq!(run.json["output_parameters"]["Text"], "hello", "{run:?}");
    assert_eq!(server.get("/custom-apis", &tenant.token).await.json[0]["name"], "contoso_Echo");
    assert_eq!(server.get("/custom-apis/contoso_Echo", &tenant.token).await.json["kind"], "custom-api");

    // The background operation ends with the API's output.
    let operation = server
        .wait_for(&format!("/background-operations/{}", o.operation), &tenant.token, |op| op["status"] == 30)
        .await;
    assert_eq!(operation["output_parameters"]["Text"], "hi", "{operation}");
    assert_eq!(operation["progress"], 100);

    // Cancel, pause and resume: a spinning job on a lane of its own.
    let spin = server.upload(&tenant, samples::HOSTILE_INFINITE_LOOP, "spin").await;
    server
        .post(
            "/steps",
            &tenant.token,
            json!({"name": "spin", "plugin": spin, "message": "Create", "entity": "spin"}),
        )
        .await;
    let fired = server.post("/events", &tenant.token, json!({"message": "Create", "entity": "spin"})).await;
    let spin_job = format!("/jobs/{}", fired.json["jobs"][0]);
    server.wait_for(&spin_job, &tenant.token, |j| j["status"] == 20).await;
    // Pausing stops the run at its next fuel yield, which may come before the answer.
    let paused = server.post(&format!("{spin_job}/pause"), &tenant.token, json!({})).await;
    assert!([21, 10].contains(&paused.json["status"].as_u64().unwrap()), "{paused:?}");
    server.wait_for(&spin_job, &tenant.token, |j| j["status"] == 10).await;
    let resumed = server.post(&format!("{spin_job}/resume"), &tenant.token, json!({})).await;
    assert!([0, 20].contains(&resumed.json["status"].as_u64().unwrap()), "{resumed:?}");
    let canceled = server.post(&format!("{spin_job}/cancel"), &tenant.token, json!({})).await;
    assert!([22, 32].contains(&canceled.json["status"].as_u64().unwrap()), "{canceled:?}");
    let spun = server.wait_for(&spin_job, &tenant.token, terminal).await;
    assert_eq!(spun["status"], 32);

    // Deletes.
    for path in [
        format!("/steps/{}", o.step),
        format!("/workflows/{}", o.workflow),
        "/custom-apis/contoso_Echo".into(),
    ] {
        assert_eq!(server.send(Method::DELETE, &path, &tenant.token, None).await.status, 204, "{path}");
        assert_eq!(server.get(&path, &tenant.token).await.status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_ids_answer_404_on_every_route() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let a = server.tenant("contoso").await;
    let b = server.tenant("fabrikam").await;
    let o = objects(&server, &a).await;
    let (step, workflow, job, operation) = (o.step, o.workflow, o.job, &o.operation);
    let routes: Vec<(Method, String, Option<Json>)> = vec![
        (Method::GET, format!("/steps/{step}"), None),
        (Method::DELETE, format!("/steps/{step}"), None),
        (Method::GET, format!("/workflows/{workflow}"), None),
        (
            Method::PUT,
            format!("/workflows/{workflow}"),
            Some(json!({"trigger": {"message": "Create", "entity": "x"}, "steps": [{"plugin": o.plugin}]})),
        ),
        (Method::POST, format!("/workflows/{workflow}/activate"), None),
        (Method::POST, format!("/workflows/{workflow}/deactivate"), None),
        (Method::DELETE, format!("/workflows/{workflow}"), None),
        (Method::GET, "/custom-apis/contoso_Echo".into(), None),
        (Method::DELETE, "/custom-apis/contoso_Echo".into(), None),
        (Method::POST, "/custom-apis/contoso_Echo/run".into(), Some(json!({"parameters": {"Text": "x"}}))),
        (
            Method::POST,
            "/background-operations".into(),
            Some(json!({"request": {"name": "contoso_Echo", "parameters": {"Text": "x"}}})),
        ),
        (Method::GET, format!("/jobs/{job}"), None),
        (Method::GET, format!("/jobs/{job}/trace"), None),
        (Method::POST, format!("/jobs/{job}/cancel"), None),
        (Method::POST, format!("/jobs/{job}/pause"), None),
        (Method::POST, format!("/jobs/{job}/resume"), None),
        (Method::GET, format!("/background-operations/{operation}"), None),
        (Method::DELETE, format!("/background-operations/{operation}"), None),
        // A step or workflow that names another org's plug-in.
        (
            Method::POST,
            "/steps".into(),
            Some(json!({"name": "x", "plugin": o.plugin, "message": "Create", "entity": "account"})),
        ),
        (
            Method::POST,
            "/workflows".into(),
            Some(
                json!({"name": "x", "trigger": {"message": "Create", "entity": "a"}, "steps": [{"plugin": o.plugin}]}),
            ),
        ),
        (Method::POST, "/custom-apis".into(), Some(json!({"name": "mine", "plugin": o.plugin}))),
        (
            Method::POST,
            "/events".into(),
            Some(json!({"message": "Update", "entity": "account", "record_id": "nope", "attributes": {}})),
        ),
    ];
    for (method, path, body) in &routes {
        let body = body.clone().or_else(|| (*method == Method::POST).then(|| json!({})));
        let reply = server.send(method.clone(), path, &b.token, body).await;
        assert_eq!(reply.status, 404, "{method} {path} as another org: {reply:?}");
        assert!(["not-found", "record-not-found"].contains(&reply.code()), "{method} {path}: {reply:?}");
    }
    // Lists are scoped too, and org A's objects are untouched.
    for list in ["/steps", "/workflows", "/custom-apis", "/plugins", "/jobs"] {
        assert_eq!(server.get(list, &b.token).await.json, json!([]), "{list}");
    }
    assert_eq!(server.get(&format!("/steps/{step}"), &a.token).await.status, 200);
    // The operator's routes: an unknown org or token is 404 too.
    for (method, path) in [
        (Method::GET, "/orgs/999/quotas"),
        (Method::PUT, "/orgs/999/quotas/regular"),
        (Method::POST, "/orgs/999/tokens"),
        (Method::GET, "/orgs/999/tokens"),
        (Method::DELETE, "/orgs/1/tokens/999"),
        (Method::PUT, "/orgs/1/quotas/fast"),
    ] {
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let reply = server.send(method.clone(), path, &server.operator, body).await;
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
    }
    // A's token cannot be revoked through B's org.
    let revoke =
        server.send(Method::DELETE, &format!("/orgs/{}/tokens/1", b.org), &server.operator, None).await;
    assert_eq!(revoke.status, 404);
    assert_eq!(server.get("/org", &a.token).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_4xx_with_stable_codes() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let t = server.tenant("contoso").await;
    let token = t.token.as_str();
    let raw = |path: &'static str, content_type: &'static str, body: &[u8]| {
        server.raw(Method::POST, path, token, content_type, body.to_vec())
    };
    let cases = [
        (raw("/events", "application/json", b"{\"message\": ").await, 400, "malformed-json"),
        (
            raw(
                "/events",
                "application/json",
                b"{\"message\": \"Create\", \"entity\": \"a\", \"colour\": 1}",
            )
            .await,
            422,
            "unknown-field",
        ),
        (
            raw("/events", "application/json", b"{\"message\": 7, \"entity\": \"a\"}").await,
            422,
            "invalid-body",
        ),
        (raw("/events", "text/plain", b"{}").await, 415, "unsupported-media-type"),
        (
            server.announce_oversize("/events", "application/json", 2 << 20, token).await,
            413,
            "body-too-large",
        ),
        (raw("/plugins", "application/wasm", b"").await, 422, "empty-plugin"),
        (raw("/plugins", "application/wasm", b"MZ\x90\x00 this is not wasm").await, 422, "not-wasm"),
        (raw("/plugins", "application/wasm", &wat::parse_str("(module)").unwrap()).await, 422, "core-module"),
        (
            server.announce_oversize("/plugins", "application/wasm", 64 << 20, token).await,
            413,
            "body-too-large",
        ),
        (
            raw("/events", "application/json", b"{\"message\": \"Merge\", \"entity\": \"a\"}").await,
            400,
            "invalid-request",
        ),
        (server.get("/jobs?status=sideways", token).await, 400, "invalid-query"),
        (server.get("/jobs?limit=lots", token).await, 400, "invalid-query"),
        (server.get("/jobs/12345", token).await, 404, "not-found"),
        (server.get("/jobs/not-a-number", token).await, 404, "not-found"),
        (server.get("/nowhere", token).await, 404, "no-route"),
        (server.send(Method::PATCH, "/jobs", token, None).await, 405, "method-not-allowed"),
        (server.get("/jobs", "").await, 401, "unauthorized"),
        (server.get("/jobs", "slu_forged").await, 401, "unauthorized"),
        (server.get("/orgs", token).await, 403, "operator-token-required"),
        (server.get("/jobs", &server.operator).await, 403, "tenant-token-required"),
        (server.post("/orgs", &server.operator, json!({"name": "contoso"})).await, 409, "conflict"),
        (server.post("/orgs", &server.operator, json!({"name": ""})).await, 400, "invalid-request"),
    ];
    for (n, (reply, status, code)) in cases.iter().enumerate() {
        assert_eq!((reply.status, reply.code()), (*status, *code), "case {n}: {reply:?}");
        assert!(!reply.json["error"]["message"].as_str().unwrap_or("").is_empty(), "case {n} has a message");
    }
    // Custom API parameters are checked against their declaration.
    let echo = server.upload(&t, samples::ECHO, "echo").await;
    let api = json!({"name": "Echo", "plugin": echo, "parameters": [{"name": "Text", "type": "string"}]});
    assert_eq!(server.post("/custom-apis", token, api.clone()).await.status, 201);
    assert_eq!(server.post("/custom-apis", token, api).await.code(), "conflict");
    let bad_type = json!({"name": "E2", "plugin": echo, "parameters": [{"name": "T", "type": "blob"}]});
    assert_eq!(server.post("/custom-apis", token, bad_type).await.code(), "invalid-request");
    for parameters in [json!({}), json!({"Text": 3}), json!({"Text": "x", "Extra": 1})] {
        let reply = server.post("/custom-apis/Echo/run", token, json!({"parameters": parameters})).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid-request"), "{parameters}: {reply:?}");
    }
    let callback = json!({"request": {"name": "Echo", "parameters": {"Text": "x"}}, "callback_uri": "ftp://example.com/x"});
    assert_eq!(server.post("/background-operations", token, callback).await.code(), "invalid-callback-uri");
    // A failing synchronous step answers its error and rolls the event back.
    let validator = server.upload(&t, samples::CREDIT_VALIDATOR, "credit-validator").await;
    let step = json!({"name": "validate", "plugin": validator, "message": "Create", "entity": "account",
                      "stage": "pre-validation", "mode": "synchronous"});
    assert_eq!(server.post("/steps", token, step).await.status, 201);
    let refused = server
        .post("/events", token, json!({"message": "Create", "entity": "account", "record_id": "r1", "attributes": {"creditlimit": {"money": "-5"}}}))
        .await;
    assert_eq!((refused.status, refused.code()), (422, "step-failed"), "{refused:?}");
    assert_eq!(refused.json["error"]["details"]["step"], "validate");
    // The host is still up and nothing was written.
    assert_eq!(server.get("/jobs", token).await.json, json!([]));
}

/// A tenant reads its records as its plug-ins left them; another tenant's are not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_read_by_their_own_tenant_only() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let (tenant, other) = (server.tenant("contoso").await, server.tenant("fabrikam").await);
    let o = objects(&server, &tenant).await;
    server.wait_for(&format!("/jobs/{}", o.job), &tenant.token, terminal).await;
    let all = server.get("/records/account?top=10", &tenant.token).await;
    assert_eq!(all.status, 200, "{all:?}");
    let record = &all.json[0];
    assert_eq!(record["attributes"]["name"], "Contoso", "{all:?}");
    let id = record["id"].as_str().unwrap();
    let one = server.get(&format!("/records/account/{id}"), &tenant.token).await;
    assert_eq!(one.json["attributes"]["accountnumber"], "ACC-000001", "{one:?}");
    let theirs = server.get(&format!("/records/account/{id}"), &other.token).await;
    assert_eq!((theirs.status, theirs.code()), (404, "record-not-found"), "{theirs:?}");
    assert_eq!(server.get("/records/account", &other.token).await.json, json!([]));
    let bad = server.get("/records/account?top=x", &tenant.token).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid-query"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_routes() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let document = server.get("/openapi.json", "").await;
    assert_eq!(document.status, 200);
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in document.json["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| k.as_str() != "parameters") {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        "DELETE /background-operations/{id}",
        "DELETE /custom-apis/{name}",
        "DELETE /orgs/{org}/tokens/{token}",
        "DELETE /steps/{id}",
        "DELETE /workflows/{id}",
        "GET /background-operations/{id}",
        "GET /custom-apis",
        "GET /custom-apis/{name}",
        "GET /health",
        "GET /jobs",
        "GET /jobs/{id}",
        "GET /jobs/{id}/trace",
        "GET /org",
        "GET /orgs",
        "GET /orgs/{org}/quotas",
        "GET /orgs/{org}/tokens",
        "GET /plugins",
        "GET /quotas",
        "GET /records/{entity}",
        "GET /records/{entity}/{id}",
        "GET /steps",
        "GET /steps/{id}",
        "GET /workflows",
        "GET /workflows/{id}",
        "POST /background-operations",
        "POST /custom-apis",
        "POST /custom-apis/{name}/run",
        "POST /definitions/{id}/deactivate",
        "POST /definitions/{id}/release",
        "POST /events",
        "POST /events/batch",
        "POST /jobs/{id}/cancel",
        "POST /jobs/{id}/pause",
        "POST /jobs/{id}/resume",
        "POST /orgs",
        "POST /orgs/{org}/definitions/{id}/deactivate",
        "POST /orgs/{org}/definitions/{id}/release",
        "POST /orgs/{org}/tokens",
        "POST /plugins",
        "POST /steps",
        "POST /workflows",
        "POST /workflows/{id}/activate",
        "POST /workflows/{id}/deactivate",
        "PUT /orgs/{org}/quotas/{lane}",
        "PUT /workflows/{id}",
    ];
    let listed: Vec<String> = operations.iter().map(|(m, p)| format!("{m} {p}")).collect();
    assert_eq!(listed, expected, "the document lists the API's operations");
    // Every documented operation is routed: it never answers no-route or 405.
    for (method, path) in &operations {
        let concrete = path.replace("{org}", "1").replace("{lane}", "regular").replace(['{', '}'], "");
        let token = if path.starts_with("/orgs") { server.operator.clone() } else { tenant.token.clone() };
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let reply = server.send(method.parse().unwrap(), &concrete, &token, body).await;
        assert!(!["no-route", "method-not-allowed"].contains(&reply.code()), "{method} {path}: {reply:?}");
    }
}

/// Liveness without a token, for supervisors and load balancers: 200 while the node
/// runs jobs (503 with the reason once its driver has stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_a_token_while_the_node_runs_jobs() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let reply = server.client.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json::<serde_json::Value>().await.unwrap()["status"], "ok");
}

/// A node whose store keeps refusing commits stops its driver and says so: `/health`
/// answers 503 with the reason, instead of a node that accepts events it never runs.
/// The refusal is real: another connection adds a trigger that aborts every job update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_refuses_commits_reports_itself_unhealthy() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let echo = server.upload(&tenant, samples::ECHO, "echo").await;
    let step = server
        .post(
            "/steps",
            &tenant.token,
            json!({"name": "echo", "plugin": echo, "message": "Create", "entity": "lead"}),
        )
        .await;
    assert_eq!(step.status, 201, "{step:?}");
    let db = rusqlite::Connection::open(server.data_dir().join("sluice.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_job_updates BEFORE UPDATE ON jobs
         BEGIN SELECT RAISE(ABORT, 'the disk refused the write'); END;",
    )
    .unwrap();
    let event = server.post("/events", &tenant.token, json!({"message": "Create", "entity": "lead"})).await;
    assert_eq!(event.status, 200, "{event:?}");
    // The writer retries the commit three times (10 ms, 100 ms, 1 s), then the node stops.
    let mut health = None;
    for _ in 0..100 {
        let reply = server.client.get(format!("{}/health", server.base)).send().await.unwrap();
        if reply.status() == 503 {
            health = Some(reply.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let health = health.expect("the node reports itself unhealthy once its driver has stopped");
    let reason = health.to_string();
    assert!(reason.contains("the store refused a commit"), "{health}");
}

/// Dependency tokens through the API: an org's jobs that name the same token run one at a
/// time in order; another org's jobs naming the same string are not in that chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_tokens_chain_an_orgs_jobs_and_never_another_orgs() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let (a, b) = (server.tenant("contoso").await, server.tenant("fabrikam").await);
    for tenant in [&a, &b] {
        let burn = server.upload(tenant, samples::CPU_BURN, "burn").await;
        let step = json!({"name": "burn", "plugin": burn, "message": "Create", "entity": "task"});
        assert_eq!(server.post("/steps", &tenant.token, step).await.status, 201);
    }
    let fire = |tenant: &Tenant, rounds: u32, token: Option<&str>| {
        let event = json!({"message": "Create", "entity": "task", "dependency_token": token,
                           "attributes": {"limit": 1_000_000, "rounds": rounds}});
        let token = tenant.token.clone();
        let server = &server;
        async move {
            let reply = server.post("/events", &token, event).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            format!("/jobs/{}", reply.json["jobs"][0])
        }
    };
    let long = fire(&a, 100, Some("nightly")).await;
    let next = fire(&a, 1, Some("nightly")).await;
    let free = fire(&a, 1, None).await;
    let other = fire(&b, 1, Some("nightly")).await;
    let done = |job: &Json| job["status"].as_u64().is_some_and(|s| s >= 30);
    let long = server.wait_for(&long, &a.token, done).await;
    let next = server.wait_for(&next, &a.token, done).await;
    let free = server.wait_for(&free, &a.token, done).await;
    let other = server.wait_for(&other, &b.token, done).await;
    for job in [&long, &next, &free, &other] {
        assert_eq!(job["status_name"], "succeeded", "{job}");
    }
    let at = |job: &Json, field: &str| job[field].as_i64().unwrap();
    assert!(at(&next, "started_at") >= at(&long, "completed_at"), "the chain waits: {long} {next}");
    assert!(at(&free, "started_at") < at(&long, "completed_at"), "a job without the token does not: {free}");
    assert!(at(&other, "started_at") < at(&long, "completed_at"), "another org's chain is its own: {other}");

    let too_long = json!({"message": "Create", "entity": "task", "dependency_token": "t".repeat(300)});
    let refused = server.post("/events", &a.token, too_long).await;
    assert_eq!((refused.status, refused.code()), (422, "too-large"), "{refused:?}");
}

/// The runaway actions through the API: releasing a definition that is not flagged
/// answers `released: null`; another org's definition is 404 (never 403), for the
/// tenant and for a wrong org in the operator's path; deactivating any definition kind
/// stops its new jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_release_and_deactivate_in_one_request() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let contoso = server.tenant("contoso").await;
    let fabrikam = server.tenant("fabrikam").await;
    let echo = server.upload(&contoso, samples::ECHO, "echo").await;
    let step = json!({"name": "audit", "plugin": echo, "message": "Create", "entity": "lead"});
    let step = server.post("/steps", &contoso.token, step).await.json["id"].as_u64().unwrap();

    let released = server.post(&format!("/definitions/{step}/release"), &contoso.token, json!({})).await;
    assert_eq!(
        (released.status, released.json.clone()),
        (200, json!({"definition": step, "released": null}))
    );
    let theirs = server.post(&format!("/definitions/{step}/release"), &fabrikam.token, json!({})).await;
    assert_eq!((theirs.status, theirs.code()), (404, "not-found"));
    let theirs = server.post(&format!("/definitions/{step}/deactivate"), &fabrikam.token, json!({})).await;
    assert_eq!(theirs.status, 404);
    let wrong_org = format!("/orgs/{}/definitions/{step}/release", fabrikam.org);
    assert_eq!(server.post(&wrong_org, &server.operator, json!({})).await.status, 404);
    let operator = format!("/orgs/{}/definitions/{step}/release", contoso.org);
    assert_eq!(server.post(&operator, &server.operator, json!({})).await.status, 200);
    assert_eq!(server.post(&operator, &contoso.token, json!({})).await.status, 403, "operator only");

    let deactivated =
        server.post(&format!("/definitions/{step}/deactivate"), &contoso.token, json!({})).await;
    assert_eq!((deactivated.status, deactivated.json["active"].clone()), (200, json!(false)));
    let lead = server.post("/events", &contoso.token, json!({"message": "Create", "entity": "lead"})).await;
    assert_eq!(lead.json["jobs"], json!([]), "a deactivated step starts nothing");
}

/// E-mail jobs through the API: creating an `email` record (by an event, or from a
/// plug-in through its record service) queues the org's sender as an e-mail job on the
/// exempt lane, which runs although the org's other lanes are at their quotas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_jobs_run_on_the_exempt_lane_outside_the_quotas() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let contoso = server.tenant("contoso").await;
    // One start an hour on the priority lane, already taken by a lead's job.
    let tight = json!({"max-threads": 1, "max-throughput": 1, "throughput-window-minutes": 60});
    for lane in ["priority", "regular"] {
        let path = format!("/orgs/{}/quotas/{lane}", contoso.org);
        assert_eq!(server.send(Method::PUT, &path, &server.operator, Some(tight.clone())).await.status, 200);
    }
    let echo = server.upload(&contoso, samples::ECHO, "echo").await;
    let welcome = server.upload(&contoso, samples::WELCOME_MAIL, "welcome-mail").await;
    for (name, plugin, entity) in
        [("audit", echo, "lead"), ("send e-mail", echo, "email"), ("welcome", welcome, "contact")]
    {
        let step = json!({"name": name, "plugin": plugin, "message": "Create", "entity": entity});
        assert_eq!(server.post("/steps", &contoso.token, step).await.status, 201);
    }
    let jobs_of = |reply: Reply| -> Vec<u64> {
        reply.json["jobs"].as_array().unwrap().iter().map(|j| j.as_u64().unwrap()).collect()
    };
    let lead =
        jobs_of(server.post("/events", &contoso.token, json!({"message": "Create", "entity": "lead"})).await);
    server.wait_for(&format!("/jobs/{}", lead[0]), &contoso.token, |j| j["status"] == 30).await;
    let held =
        jobs_of(server.post("/events", &contoso.token, json!({"message": "Create", "entity": "lead"})).await);

    // Three e-mails sent through the API: e-mail jobs on the exempt lane, all run.
    for n in 0..3 {
        let email = json!({"message": "Create", "entity": "email",
                           "attributes": {"to": format!("user{n}@example.com"), "subject": "Your invoice"}});
        let jobs = jobs_of(server.post("/events", &contoso.token, email).await);
        assert_eq!(jobs.len(), 1);
        let job = server.wait_for(&format!("/jobs/{}", jobs[0]), &contoso.token, |j| j["status"] == 30).await;
        assert_eq!(
            (job["lane"].as_str(), job["operation"].as_str()),
            (Some("exempt"), Some("email")),
            "{job}"
        );
    }
    let waiting = server.get(&format!("/jobs/{}", held[0]), &contoso.token).await;
    assert_eq!(waiting.json["status"], 0, "the lead's job still waits for its window: {}", waiting.json);

    // A plug-in queues one: a new contact's welcome step creates an `email` record.
    let fabrikam = server.tenant("fabrikam").await;
    let echo = server.upload(&fabrikam, samples::ECHO, "echo").await;
    let welcome = server.upload(&fabrikam, samples::WELCOME_MAIL, "welcome-mail").await;
    let sender = json!({"name": "send e-mail", "plugin": echo, "message": "Create", "entity": "email"});
    let sender = server.post("/steps", &fabrikam.token, sender).await.json["id"].as_u64().unwrap();
    let step = json!({"name": "welcome", "plugin": welcome, "message": "Create", "entity": "contact"});
    assert_eq!(server.post("/steps", &fabrikam.token, step).await.status, 201);
    let contact = json!({"message": "Create", "entity": "contact",
                         "attributes": {"fullname": "Ada Lovelace", "emailaddress1": "ada@example.com"}});
    let queued = jobs_of(server.post("/events", &fabrikam.token, contact).await);
    let welcome_job =
        server.wait_for(&format!("/jobs/{}", queued[0]), &fabrikam.token, |j| j["status"] == 30).await;
    assert_eq!(welcome_job["lane"], "priority");
    let sent = server
        .wait_for(&format!("/jobs?definition={sender}"), &fabrikam.token, |list| {
            list.as_array().is_some_and(|l| l.len() == 1 && l[0]["status"] == 30)
        })
        .await;
    assert_eq!((sent[0]["lane"].as_str(), sent[0]["depth"].as_u64()), (Some("exempt"), Some(2)), "{sent}");
    let email = server.get("/records/email", &fabrikam.token).await;
    assert_eq!(email.json[0]["attributes"]["subject"], "Welcome, Ada Lovelace", "{}", email.json);
}

/// Bulk-import settings through the API: a workflow's `bulk` is kept and shown; a bad
/// one is refused by name; an import batch (`import: true`) coalesces its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_batch_coalesces_jobs_as_each_workflow_says() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let echo = server.upload(&tenant, samples::ECHO, "echo").await;
    let workflow = |bulk: &str| {
        json!({"name": "enrich", "trigger": {"message": "Create", "entity": "account"},
               "steps": [{"plugin": echo}], "activate": true, "bulk": bulk})
    };
    for bad in ["batched(0)", "batched(many)", "sometimes"] {
        let refused = server.post("/workflows", &tenant.token, workflow(bad)).await;
        assert_eq!(refused.status, 422, "{bad}: {:?}", refused.json);
    }
    let created = server.post("/workflows", &tenant.token, workflow("batched(25)")).await;
    assert_eq!((created.status, created.json["spec"]["bulk"].clone()), (201, json!("batched(25)")));
    let events: Vec<Json> =
        (0..100).map(|n| json!({"message": "Create", "entity": "account", "attributes": {"n": n}})).collect();
    let imported =
        server.post("/events/batch", &tenant.token, json!({"events": events, "import": true})).await;
    assert_eq!(imported.status, 200);
    let jobs: usize =
        imported.json.as_array().unwrap().iter().map(|o| o["jobs"].as_array().unwrap().len()).sum();
    assert_eq!(jobs, 4, "100 records, 25 a job");
    let plain = server.post("/events/batch", &tenant.token, json!({"events": events[..10]})).await;
    let jobs: usize =
        plain.json.as_array().unwrap().iter().map(|o| o["jobs"].as_array().unwrap().len()).sum();
    assert_eq!(jobs, 10, "a plain batch starts a job per event");

    // A plain batch is one transaction that everyone's commits wait behind: at most
    // 1,000 events. An import, committed 100 at a time, may hold 5,000.
    let leads = |n: usize| -> Vec<Json> {
        (0..n).map(|i| json!({"message": "Create", "entity": "lead", "record_id": format!("l{i}")})).collect()
    };
    let refused = server.post("/events/batch", &tenant.token, json!({"events": leads(1_001)})).await;
    assert_eq!((refused.status, refused.code()), (400, "batch-too-large"), "{:?}", refused.json);
    assert_eq!(
        server.get("/records/lead", &tenant.token).await.json,
        json!([]),
        "a refused batch stores nothing"
    );
    let imported =
        server.post("/events/batch", &tenant.token, json!({"events": leads(1_001), "import": true})).await;
    assert_eq!(imported.status, 200);
    let refused =
        server.post("/events/batch", &tenant.token, json!({"events": leads(5_001), "import": true})).await;
    assert_eq!((refused.status, refused.code()), (400, "batch-too-large"));
}
