//! Black-box: every request form of shared/entra/PROTOCOL.md against the real server on 127.0.0.1,
//! through the `sandbox` app.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn test_connection_probe_and_zero_results_are_200_empty() {
    let s = start().await;
    for path in [
        filter_path("Users", "userName eq \"6d1b5c3a-0b1e-4a3f-9a55-3c7f3e9b1f00\""),
        filter_path("Users", "externalId eq \"nobody\""),
        "/Groups?excludedAttributes=members&filter=displayName+eq+%22nobody%22".to_string(),
        "/Users?filter=userName%20eq%20%22spaces%20via%20percent%22".to_string(),
        "/Users?filter=userName+eq+%22spaces+via+plus%22".to_string(),
    ] {
        let a = s.get(&path).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
        assert_eq!(a.content_type(), "application/scim+json");
        assert_eq!(a.body["totalResults"], 0, "{path}");
        assert_eq!(a.body["Resources"], json!([]), "{path}");
        assert_eq!(a.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");
    }
}

#[tokio::test]
async fn auth_is_required_and_per_app() {
    let s = start().await;
    let no_token = s.send_raw(Method::GET, "/Users", None, None, "").await;
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert!(no_token.headers.get("www-authenticate").is_some());
    let wrong = s.send_raw(Method::GET, "/Users", Some("nope"), None, "").await;
    assert_eq!(wrong.status, 401);
    // The other app's token does not open this app, and unknown apps look like wrong tokens.
    let cross = s.send_raw(Method::GET, "/Users", Some(OTHER_TOKEN), None, "").await;
    assert_eq!(cross.status, 401);
    let other_base = s.base.replace("/sandbox/", "/other/");
    let own = s.send_raw(Method::GET, &format!("{other_base}/Users"), Some(OTHER_TOKEN), None, "").await;
    assert_eq!(own.status, 200);
    let unknown = s.send_raw(Method::GET, &s.base.replace("/sandbox/", "/nope/"), Some(TOKEN), None, "").await;
    assert_eq!(unknown.status, 401);
    // Nothing was created by an unauthenticated POST.
    let post = s
        .send_raw(
            Method::POST,
            "/Users",
            None,
            Some(entra_user("sneaky").to_string().into_bytes()),
            "application/scim+json",
        )
        .await;
    assert_eq!(post.status, 401);
    assert_eq!(s.get(&filter_path("Users", "userName eq \"sneaky\"")).await.body["totalResults"], 0);
}

#[tokio::test]
async fn create_get_query_user_as_entra_does() {
    let s = start().await;
    let created = s.post("/Users", entra_user("Test_User_1")).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.content_type(), "application/scim+json");
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(created.headers.get("location").is_some());
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert!(created.body["meta"]["created"].is_string());
    assert!(created.body["meta"]["lastModified"].is_string());
    assert_eq!(created.body["emails"][0]["value"], "Test_User_1@example.com");
    assert!(created.body.get("roles").is_none(), "empty roles are ignored");

    let got = s.get(&format!("/Users/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["userName"], "Test_User_1");
    assert_eq!(got.body["externalId"], "ext-Test_User_1");

    for f in [
        "userName eq \"Test_User_1\"",
        "userName eq \"test_user_1\"",
        "externalId eq \"ext-Test_User_1\"",
        "emails[type eq \"work\"].value eq \"Test_User_1@example.com\"",
        "userName eq \"Test_User_1\" and active eq true",
    ] {
        let a = s.get(&filter_path("Users", f)).await;
        assert_eq!(a.status, 200, "{f}");
        assert_eq!(a.body["totalResults"], 1, "{f}: {:?}", a.body);
        assert_eq!(a.body["startIndex"], 1);
        assert_eq!(a.body["Resources"][0]["id"], id.as_str());
    }
    // externalId is case-exact.
    assert_eq!(s.get(&filter_path("Users", "externalId eq \"EXT-TEST_USER_1\"")).await.body["totalResults"], 0);
}

#[tokio::test]
async fn create_with_nulls_and_duplicate_is_409() {
    let s = start().await;
    let mut body = entra_user("Joy");
    body["addresses"] = Value::Null;
    body["phoneNumbers"] = Value::Null;
    body["title"] = Value::Null;
    body["displayName"] = json!("Joy Young");
    let a = s.post("/Users", body).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert!(a.body.get("title").is_none() && a.body.get("addresses").is_none());

    let dup = s.post("/Users", entra_user("JOY")).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["scimType"], "uniqueness");
}

#[tokio::test]
async fn patch_forms_entra_sends() {
    let s = start().await;
    let id = s.create_user("pat").await;
    let path = format!("/Users/{id}");

    // Multi-valued filtered path + sub-attribute, "Replace" capitalised.
    let a = s
        .patch(
            &path,
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"},
                {"op": "Replace", "path": "name.familyName", "value": "NewFamily"}
            ]),
        )
        .await;
    assert!(a.status == 200 || a.status == 204, "{:?}", a.body);
    let u = s.get(&path).await.body;
    assert_eq!(u["emails"].as_array().unwrap().len(), 1);
    assert_eq!(u["emails"][0]["value"], "new@example.com");
    assert_eq!(u["name"]["familyName"], "NewFamily");
    assert_eq!(u["name"]["givenName"], "Given");

    // Disable with the string "False" (default mode), then with a boolean (flag mode).
    assert!(s.patch(&path, json!([{"op": "Replace", "path": "active", "value": "False"}])).await.status.is_success());
    assert_eq!(s.get(&path).await.body["active"], false);
    let still = s.get(&filter_path("Users", "userName eq \"pat\"")).await;
    assert_eq!(still.body["totalResults"], 1, "a disabled user is still found");
    assert!(s.patch(&path, json!([{"op": "replace", "path": "active", "value": true}])).await.status.is_success());
    assert_eq!(s.get(&path).await.body["active"], true);

    // No-path replace with dotted and URN-qualified keys.
    let a = s
        .patch(
            &path,
            json!([{"op": "replace", "value": {
                "displayName": "Pat Doe",
                "name.givenName": "Pat",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"
            }}]),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    let u = s.get(&path).await.body;
    assert_eq!(u["displayName"], "Pat Doe");
    assert_eq!(u["name"]["givenName"], "Pat");
    assert!(u.get("name.givenName").is_none());
    assert_eq!(u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"], "42");

    // Single-value add, missing filtered entries created, manager.
    let a = s
        .patch(&path, json!([
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].postalCode", "value": "98052"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "mgr-1"}
        ]))
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    let u = s.get(&path).await.body;
    assert_eq!(u["nickName"], "Babs");
    assert_eq!(u["phoneNumbers"][0]["type"], "mobile");
    assert_eq!(u["phoneNumbers"][0]["value"], "+1 555 0100", "values kept exactly as received");
    assert_eq!(u["addresses"][0]["postalCode"], "98052");
    assert_eq!(u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"]["value"], "mgr-1");

    // userName change: new name findable, old not.
    assert!(s
        .patch(&path, json!([{"op": "Replace", "path": "userName", "value": "renamed@example.com"}]))
        .await
        .status
        .is_success());
    assert_eq!(s.get(&filter_path("Users", "userName eq \"renamed@example.com\"")).await.body["totalResults"], 1);
    assert_eq!(s.get(&filter_path("Users", "userName eq \"pat\"")).await.body["totalResults"], 0);
}

#[tokio::test]
async fn groups_as_entra_uses_them() {
    let s = start().await;
    let uid = s.create_user("member1").await;
    let uid2 = s.create_user("member2").await;
    let g = s
        .post("/Groups", json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "gext-1", "displayName": "Group One", "meta": {"resourceType": "Group"}
        }))
        .await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    let gid = g.body["id"].as_str().unwrap().to_string();
    let gpath = format!("/Groups/{gid}");

    let add = s.patch(&gpath, json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": uid}, {"$ref": null, "value": uid2}]}])).await;
    assert_eq!(add.status, 204);
    // Re-adding is a no-op success.
    assert_eq!(
        s.patch(&gpath, json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": uid}]}]))
            .await
            .status,
        204
    );
    assert_eq!(s.get(&gpath).await.body["members"].as_array().unwrap().len(), 2);

    let excluded = s.get(&format!("{gpath}?excludedAttributes=members")).await;
    assert_eq!(excluded.status, 200);
    assert!(excluded.body.get("members").is_none());
    let by_name = s.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22Group+One%22").await;
    assert_eq!(by_name.body["totalResults"], 1);
    assert!(by_name.body["Resources"][0].get("members").is_none());
    let membership = s
        .get(&format!("/Groups?filter={}", url_encode(&format!("id eq \"{gid}\" and members[value eq \"{uid}\"]"))))
        .await;
    assert_eq!(membership.body["totalResults"], 1, "{:?}", membership.body);

    // Remove: default form (value list) and flag form (filtered path).
    assert_eq!(
        s.patch(&gpath, json!([{"op": "Remove", "path": "members", "value": [{"value": uid}]}])).await.status,
        204
    );
    assert_eq!(
        s.patch(&gpath, json!([{"op": "remove", "path": format!("members[value eq \"{uid2}\"]")}])).await.status,
        204
    );
    assert!(s.get(&gpath).await.body.get("members").is_none());

    assert_eq!(
        s.patch(&gpath, json!([{"op": "Replace", "path": "displayName", "value": "Group Renamed"}])).await.status,
        204
    );
    assert_eq!(s.get(&gpath).await.body["displayName"], "Group Renamed");

    assert_eq!(s.delete(&gpath).await.status, 204);
    assert_eq!(s.get(&gpath).await.status, 404);
}

#[tokio::test]
async fn delete_and_unknown_ids() {
    let s = start().await;
    let id = s.create_user("gone").await;
    assert_eq!(s.delete(&format!("/Users/{id}")).await.status, 204);
    let a = s.get(&format!("/Users/{id}")).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["status"], "404");
    assert_eq!(s.get(&filter_path("Users", "userName eq \"gone\"")).await.body["totalResults"], 0);
    assert_eq!(s.delete(&format!("/Users/{id}")).await.status, 404);
    assert_eq!(s.patch("/Users/nope", json!([{"op": "Replace", "path": "active", "value": false}])).await.status, 404);
    assert_eq!(s.delete("/Groups/nope").await.status, 404);
}

#[tokio::test]
async fn errors_are_scim_errors_with_the_right_scim_type() {
    let s = start().await;
    // (method, path, raw body, status, scimType)
    type Case<'a> = (Method, &'a str, Option<&'a [u8]>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (Method::GET, "/Users?filter=userName+eq", None, 400, Some("invalidFilter")),
        (Method::GET, "/Users?filter=noSuchAttribute+eq+%22x%22", None, 400, Some("invalidFilter")),
        (Method::GET, "/Groups?filter=displayName+eq+%22unterminated", None, 400, Some("invalidFilter")),
        (Method::POST, "/Users", Some(b"{\"userName\": "), 400, Some("invalidSyntax")),
        (Method::POST, "/Users", Some(b"[1,2]"), 400, Some("invalidSyntax")),
        (
            Method::POST,
            "/Users",
            Some(b"{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"]}"),
            400,
            Some("invalidValue"),
        ),
        (Method::POST, "/Users", Some(b"{\"userName\":\"x\",\"active\":\"maybe\"}"), 400, Some("invalidValue")),
        (Method::GET, "/Users?count=lots", None, 400, Some("invalidValue")),
        (Method::GET, "/Nope", None, 404, None),
        (Method::DELETE, "/Users", None, 405, None),
    ];
    for (method, path, body, status, scim_type) in cases {
        let a = s.send_raw(method.clone(), path, Some(TOKEN), body.map(|b| b.to_vec()), "application/scim+json").await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {:?}", a.body);
        assert_eq!(a.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{method} {path}");
        assert_eq!(a.body["status"], status.to_string());
        assert_eq!(a.body.get("scimType").and_then(Value::as_str), scim_type, "{method} {path}");
        assert_eq!(a.content_type(), "application/scim+json");
    }
    // Body over the configured limit (64 KiB in the test config): 413.
    let big = format!("{{\"userName\":\"{}\"}}", "x".repeat(70_000)).into_bytes();
    let a = s.send_raw(Method::POST, "/Users", Some(TOKEN), Some(big), "application/scim+json").await;
    assert_eq!(a.status, 413);
    // application/json is accepted too; text/plain is not.
    let a = s
        .send_raw(
            Method::POST,
            "/Users",
            Some(TOKEN),
            Some(entra_user("json").to_string().into_bytes()),
            "application/json",
        )
        .await;
    assert_eq!(a.status, 201);
    let a = s
        .send_raw(Method::POST, "/Users", Some(TOKEN), Some(entra_user("text").to_string().into_bytes()), "text/plain")
        .await;
    assert_eq!(a.status, 415);
}

#[tokio::test]
async fn paging_and_projection() {
    let s = start().await;
    for i in 0..5 {
        s.create_user(&format!("page{i}")).await;
    }
    let all = s.get("/Users").await;
    assert_eq!(all.body["totalResults"], 5);
    let page = s.get("/Users?startIndex=2&count=2").await;
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(page.body["startIndex"], 2);
    assert_eq!(page.body["Resources"][0]["userName"], "page1");
    let only = s.get("/Users?attributes=userName&count=1").await;
    let r = &only.body["Resources"][0];
    assert!(r.get("id").is_some() && r.get("userName").is_some());
    assert!(r.get("emails").is_none(), "{r}");
    let excl = s.get("/Users?excludedAttributes=emails,name&count=1").await;
    assert!(excl.body["Resources"][0].get("emails").is_none());
    assert!(excl.body["Resources"][0].get("userName").is_some());
}

#[tokio::test]
async fn discovery_documents() {
    let s = start().await;
    let spc = s.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, 200);
    assert_eq!(spc.body["patch"]["supported"], true);
    let rt = s.get("/ResourceTypes").await;
    assert_eq!(rt.body["totalResults"], 2);
    let schemas = s.get("/Schemas").await;
    assert!(schemas.body["totalResults"].as_u64().unwrap() >= 3);
    let user_schema = s.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    assert_eq!(user_schema.status, 200, "{:?}", user_schema.body);
    assert_eq!(s.get("/ResourceTypes/User").await.status, 200);
}

#[tokio::test]
async fn passwords_are_never_stored_or_returned() {
    let s = start().await;
    let mut body = entra_user("pw");
    body["password"] = json!("Secret#1234");
    let a = s.post("/Users", body).await;
    assert_eq!(a.status, 201);
    assert!(a.body.get("password").is_none());
    let id = a.body["id"].as_str().unwrap();
    assert!(s.get(&format!("/Users/{id}")).await.body.get("password").is_none());
    let log = s.running.gateway.store.audit_log(&Default::default()).await.unwrap();
    assert!(!serde_json::to_string(&log.iter().map(|e| &e.after).collect::<Vec<_>>()).unwrap().contains("Secret#1234"));
}

#[tokio::test]
async fn ip_allow_list_is_per_app() {
    let extra = "";
    let mut config = config(":memory:", extra);
    config.apps.get_mut("sandbox").unwrap().ip_allow = vec!["10.0.0.0/8".into()];
    config.apps.get_mut("other").unwrap().ip_allow = vec!["127.0.0.0/8".into(), "::1".into()];
    let s = start_with(config).await;
    let denied = s.get("/Users").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    let other = s.base.replace("/sandbox/", "/other/");
    let allowed = s.send_raw(Method::GET, &format!("{other}/Users"), Some(OTHER_TOKEN), None, "").await;
    assert_eq!(allowed.status, 200);
}

/// A PATCH the gateway refuses is still a change Entra attempted: it is in the audit log against the user,
/// with the error Entra got, so an admin can see why a user is not updating.
#[tokio::test]
async fn refused_changes_are_audited_against_the_resource() {
    let s = start().await;
    let id = s.create_user("refused").await;
    let bad_op = s.patch(&format!("/Users/{id}"), json!([{"op": "Frobnicate", "path": "title", "value": "x"}])).await;
    assert_eq!(bad_op.status, 400, "{:?}", bad_op.body);
    let bad_path = s.patch(&format!("/Users/{id}"), json!([{"op": "Replace", "path": "nosuch[", "value": "x"}])).await;
    assert_eq!(bad_path.status, 400, "{:?}", bad_path.body);
    let empty_name =
        s.patch(&format!("/Users/{id}"), json!([{"op": "Replace", "path": "userName", "value": " "}])).await;
    assert_eq!(empty_name.status, 400, "{:?}", empty_name.body);
    let mut nameless = entra_user("refused");
    nameless["userName"] = json!("");
    let put = s.send(Method::PUT, &format!("/Users/{id}"), Some(nameless)).await;
    assert_eq!(put.status, 400, "{:?}", put.body);
    let query = scim_bridge::store::AuditQuery { name: Some("refused".into()), ..Default::default() };
    let log = s.running.gateway.store.audit_log(&query).await.unwrap();
    let refused: Vec<(&str, u16)> =
        log.iter().filter(|e| e.outcome == "rejected").map(|e| (e.operation.as_str(), e.status)).collect();
    assert_eq!(refused, [("replace", 400), ("update", 400), ("update", 400), ("update", 400)], "{log:#?}");
    assert!(log
        .iter()
        .filter(|e| e.outcome == "rejected")
        .all(|e| e.resource_id.as_deref() == Some(id.as_str()) && e.before.is_some() && e.detail.is_some()));
    // A malformed PATCH to an id that does not exist has nothing to be audited against.
    let before = s.running.gateway.store.audit_len().await.unwrap();
    let missing = s.patch("/Users/00000000-0000-4000-8000-000000000000", json!([{"op": "Frobnicate"}])).await;
    assert_eq!(missing.status, 400);
    assert_eq!(s.running.gateway.store.audit_len().await.unwrap(), before);
}
