//! Hostile input over HTTP: ids out of range, bodies of the wrong JSON shape, secrets that
//! must not come back out. Each is refused (or hidden) and leaves nothing changed.

use reqwest::Method;
use serde_json::{Value as Json, json};
use sluice::callbacks::CallbackSettings;
use sluice_sample_plugins as samples;

use crate::http::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_id_out_of_range_names_no_org() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    assert_eq!(tenant.org, 1);
    // 2^32 + 1 would be org 1 if it were cut to 32 bits.
    for id in ["4294967297", "4294967296", "18446744073709551617", "-1"] {
        for (method, path) in [
            (Method::GET, format!("/orgs/{id}/quotas")),
            (Method::PUT, format!("/orgs/{id}/quotas/regular")),
            (Method::GET, format!("/orgs/{id}/tokens")),
            (Method::POST, format!("/orgs/{id}/tokens")),
            (Method::DELETE, format!("/orgs/{id}/tokens/1")),
        ] {
            let body = (method == Method::PUT || method == Method::POST).then(|| json!({}));
            let reply = server.send(method.clone(), &path, &server.operator, body).await;
            assert_eq!((reply.status, reply.code()), (404, "not-found"), "{method} {path}: {reply:?}");
        }
    }
    // Org 1's token still works: nothing was revoked through the wrapped id.
    assert_eq!(server.get("/org", &tenant.token).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_the_wrong_json_type_is_refused_and_changes_nothing() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let op = server.operator.clone();
    let quotas = format!("/orgs/{}/quotas/regular", tenant.org);
    let set = server.send(Method::PUT, &quotas, &op, Some(json!({"max-threads": 3}))).await;
    assert_eq!(set.status, 200, "{set:?}");
    let before = server.get(&format!("/orgs/{}/quotas", tenant.org), &op).await.json;
    for body in [json!([]), json!([3]), json!(7), json!("text"), json!(true), Json::Null] {
        let reply = server.send(Method::PUT, &quotas, &op, Some(body.clone())).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid-body"), "PUT quotas {body}: {reply:?}");
        let reply = server.post("/events", &tenant.token, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid-body"), "POST events {body}: {reply:?}");
        let reply = server.post("/orgs", &op, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid-body"), "POST orgs {body}: {reply:?}");
    }
    assert_eq!(server.get(&format!("/orgs/{}/quotas", tenant.org), &op).await.json, before);
    assert_eq!(server.get("/jobs", &tenant.token).await.json, json!([]));
    assert_eq!(server.get("/orgs", &op).await.json.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_configuration_is_never_answered() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let token = tenant.token.as_str();
    let plugin = server.upload(&tenant, samples::ECHO, "echo").await;
    let secret = "s3cret-api-key";
    let step = server
        .post(
            "/steps",
            token,
            json!({"name": "s", "plugin": plugin, "message": "Create", "entity": "account",
                   "unsecure_config": "public", "secure_config": secret}),
        )
        .await;
    assert_eq!(step.status, 201, "{step:?}");
    let api = server
        .post("/custom-apis", token, json!({"name": "Echo", "plugin": plugin, "secure_config": secret}))
        .await;
    assert_eq!(api.status, 201, "{api:?}");
    let id = step.json["id"].as_u64().unwrap();
    let answers = [
        step.json.clone(),
        api.json.clone(),
        server.get(&format!("/steps/{id}"), token).await.json,
        server.get("/steps", token).await.json,
        server.get("/custom-apis/Echo", token).await.json,
        server.get("/custom-apis", token).await.json,
    ];
    for answer in &answers {
        let text = answer.to_string();
        assert!(!text.contains(secret), "the secure configuration leaked: {text}");
        assert!(!text.contains("\"secure_config\""), "no secure_config field: {text}");
    }
    let got = server.get(&format!("/steps/{id}"), token).await.json;
    assert_eq!(got["spec"]["has_secure_config"], true, "{got}");
    assert_eq!(got["spec"]["unsecure_config"], "public", "{got}");
    let plain = server
        .post("/steps", token, json!({"name": "p", "plugin": plugin, "message": "Create", "entity": "lead"}))
        .await;
    assert_eq!(plain.json["spec"]["has_secure_config"], false, "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_input_is_refused_by_name_and_nothing_is_stored() {
    let server = TestServer::start(CallbackSettings::default()).await;
    let tenant = server.tenant("contoso").await;
    let token = tenant.token.as_str();
    let op = server.operator.clone();
    let echo = server.upload(&tenant, samples::ECHO, "echo").await;
    let long = "n".repeat(257);
    let many = |n: usize| (0..n).map(|i| format!("a{i}")).collect::<Vec<_>>();
    let attributes = |n: usize| {
        Json::Object((0..n).map(|i| (format!("a{i}"), json!(i))).collect::<serde_json::Map<_, _>>())
    };
    let step = |extra: Json| {
        let mut body = json!({"name": "s", "plugin": echo, "message": "Create", "entity": "account"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let workflow = |name: &str, steps: usize, entity: &str| {
        json!({"name": name, "trigger": {"message": "Create", "entity": entity},
               "steps": vec![json!({"plugin": echo}); steps]})
    };
    let cases: Vec<(Method, String, &str, Json, &str)> = vec![
        (Method::POST, "/orgs".into(), op.as_str(), json!({"name": long}), "257 bytes"),
        (
            Method::POST,
            format!("/orgs/{}/tokens", tenant.org),
            op.as_str(),
            json!({"label": long}),
            "257 bytes",
        ),
        (Method::POST, "/steps".into(), token, step(json!({"name": long})), "257 bytes"),
        (Method::POST, "/steps".into(), token, step(json!({"entity": long})), "257 bytes"),
        (Method::POST, "/steps".into(), token, step(json!({"filtering_attributes": many(257)})), "257"),
        (Method::POST, "/steps".into(), token, step(json!({"filtering_attributes": [long]})), "257 bytes"),
        (Method::POST, "/workflows".into(), token, workflow(&long, 1, "account"), "257 bytes"),
        (Method::POST, "/workflows".into(), token, workflow("w", 65, "account"), "65"),
        (Method::POST, "/workflows".into(), token, workflow("w", 1, &long), "257 bytes"),
        (Method::POST, "/custom-apis".into(), token, json!({"name": long, "plugin": echo}), "257 bytes"),
        (
            Method::POST,
            "/custom-apis".into(),
            token,
            json!({"name": "Many", "plugin": echo,
                   "parameters": many(65).iter().map(|n| json!({"name": n, "type": "string"})).collect::<Vec<_>>()}),
            "65",
        ),
        (
            Method::POST,
            "/events".into(),
            token,
            json!({"message": "Create", "entity": "account", "attributes": attributes(257)}),
            "257",
        ),
        (
            Method::POST,
            "/events".into(),
            token,
            json!({"message": "Create", "entity": "account", "attributes": {long.clone(): 1}}),
            "257 bytes",
        ),
        (
            Method::POST,
            "/events".into(),
            token,
            json!({"message": "Create", "entity": "account", "attributes": {"big": "x".repeat(65_537)}}),
            "65537 bytes",
        ),
    ];
    for (method, path, who, body, size) in cases {
        let reply = server.send(method.clone(), &path, who, Some(body)).await;
        assert_eq!((reply.status, reply.code()), (422, "too-large"), "{method} {path}: {reply:?}");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(size) && message.contains("limit"), "{path}: {message}");
    }
    let long_plugin = server
        .raw(Method::POST, &format!("/plugins?name={long}"), token, "application/wasm", vec![0; 8])
        .await;
    assert_eq!((long_plugin.status, long_plugin.code()), (422, "too-large"), "{long_plugin:?}");
    // A workflow version past the limit is refused too and the workflow keeps version 1.
    let created = server.post("/workflows", token, workflow("w", 64, "account")).await;
    assert_eq!(created.status, 201, "64 steps is within the limit: {created:?}");
    let id = created.json["id"].as_u64().unwrap();
    let version = json!({"trigger": {"message": "Create", "entity": "account"}, "steps": vec![json!({"plugin": echo}); 65]});
    let refused = server.send(Method::PUT, &format!("/workflows/{id}"), token, Some(version)).await;
    assert_eq!((refused.status, refused.code()), (422, "too-large"), "{refused:?}");
    assert_eq!(server.get(&format!("/workflows/{id}"), token).await.json["spec"]["version"], 1);
    // Nothing refused was stored.
    assert_eq!(server.get("/steps", token).await.json, json!([]));
    assert_eq!(server.get("/custom-apis", token).await.json, json!([]));
    assert_eq!(server.get("/workflows", token).await.json.as_array().map(Vec::len), Some(1));
    assert_eq!(server.get("/plugins", token).await.json.as_array().map(Vec::len), Some(1));
    assert_eq!(server.get("/orgs", &op).await.json.as_array().map(Vec::len), Some(1));
    assert_eq!(
        server.get(&format!("/orgs/{}/tokens", tenant.org), &op).await.json.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(server.get("/jobs", token).await.json, json!([]));
    // At the limits, everything is accepted.
    let at_limit = json!({"message": "Create", "entity": "account", "record_id": "full",
                          "attributes": attributes(256)});
    assert_eq!(server.post("/events", token, at_limit).await.status, 200);
    // An update cannot grow a record past the attribute limit.
    let grow =
        json!({"message": "Update", "entity": "account", "record_id": "full", "attributes": {"one_more": 1}});
    let grown = server.post("/events", token, grow).await;
    assert_eq!((grown.status, grown.code()), (422, "too-large"), "{grown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_name_with_control_characters_is_refused() {
    let server = TestServer::start(CallbackSettings::default()).await;
    for name in
        ["\u{1b}[2J\u{1b}[31mcontoso", "line\nbreak", "bell\u{7}", "nul\u{0}", "del\u{7f}", "c1\u{9b}31m"]
    {
        let reply = server.post("/orgs", &server.operator, json!({ "name": name })).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid-name"), "{name:?}: {reply:?}");
    }
    assert_eq!(server.get("/orgs", &server.operator).await.json, json!([]));
    assert_eq!(
        server.post("/orgs", &server.operator, json!({"name": "Contoso Ltd. — ünïcode"})).await.status,
        201
    );
}
