//! Robustness: random and malformed filters, PATCH bodies, JSON and headers thrown at the real server.
//! Property: no panic, no 5xx, and every error is a valid RFC 7644 error body. Bounded in `cargo test`;
//! `SCIM_BRIDGE_SOAK_CASES=N` runs N cases per property for soak runs.

mod common;

use common::*;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("SCIM_BRIDGE_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
    user_path: String,
    group_path: String,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, user_path, group_path) = rt.block_on(async {
        let s = start().await;
        let uid = s.create_user("robust@example.com").await;
        let g = s.post("/Groups", json!({"displayName": "robust"})).await;
        let gid = g.body["id"].as_str().unwrap().to_string();
        (s, format!("/Users/{uid}"), format!("/Groups/{gid}"))
    });
    Fixture { rt, server, user_path, group_path }
}

fn check(answer: &Answer, what: &str) {
    let status = answer.status.as_u16();
    // 501 is the deliberate RFC 7644 answer for /Bulk and /Me; anything else 5xx would be a failure here.
    assert!(status < 500 || status == 501, "{what}: server error {status}: {:?}", answer.body);
    if status >= 400 {
        assert_eq!(
            answer.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{what}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["status"], status.to_string(), "{what}");
        assert!(answer.body["detail"].is_string(), "{what}");
        if let Some(t) = answer.body.get("scimType") {
            let known = [
                "invalidFilter",
                "invalidSyntax",
                "invalidPath",
                "noTarget",
                "invalidValue",
                "mutability",
                "uniqueness",
                "tooMany",
                "invalidVers",
                "sensitive",
            ];
            assert!(known.contains(&t.as_str().unwrap_or("")), "{what}: scimType {t}");
        }
    }
}

fn filter_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("userName".to_string()),
        Just("emails[type eq \"work\"].value".to_string()),
        Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value".to_string()),
        Just("eq".to_string()),
        Just("co".to_string()),
        Just("pr".to_string()),
        Just("gt".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("not".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"x\"".to_string()),
        Just("\"unterminated".to_string()),
        Just("true".to_string()),
        Just("42".to_string()),
        Just("meta.lastModified".to_string()),
        Just("\\".to_string()),
        Just("%".to_string()),
        Just("+".to_string()),
        "[a-zA-Z.:\\[\\]\"() ]{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z\"\\[\\]. ]{0,10}".prop_map(Value::from),
        Just(json!("False")),
        Just(json!("members[value eq \"x\"]")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("op".to_string()),
                    Just("path".to_string()),
                    Just("value".to_string()),
                    Just("Operations".to_string()),
                    Just("userName".to_string()),
                    Just("members".to_string()),
                    Just("emails".to_string()),
                    Just("active".to_string()),
                    Just("name.givenName".to_string()),
                    "[a-zA-Z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn patch_op() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("add"), Just("Replace"), Just("REMOVE"), Just("move"), Just("")],
        prop::option::of(prop_oneof![
            Just("active".to_string()),
            Just("userName".to_string()),
            Just("displayName".to_string()),
            Just("members".to_string()),
            Just("emails[type eq \"work\"].value".to_string()),
            Just("members[value eq \"nope\"]".to_string()),
            Just("id".to_string()),
            Just("meta.created".to_string()),
            Just("name.familyName".to_string()),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager".to_string()),
            "[a-zA-Z.\\[\\]\" ]{0,16}",
        ]),
        prop::option::of(json_value()),
    )
        .prop_map(|(op, path, value)| {
            let mut o = serde_json::Map::new();
            o.insert("op".into(), json!(op));
            if let Some(p) = path {
                o.insert("path".into(), json!(p));
            }
            if let Some(v) = value {
                o.insert("value".into(), v);
            }
            Value::Object(o)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_filters_never_break_the_server(tokens in prop::collection::vec(filter_token(), 0..8), groups in any::<bool>()) {
        let f = fixture_once();
        let filter = tokens.join(" ");
        let path = format!("/{}?filter={}", if groups { "Groups" } else { "Users" }, url_encode(&filter));
        let a = f.rt.block_on(f.server.get(&path));
        check(&a, &filter);
    }

    #[test]
    fn random_patch_bodies_never_break_the_server(ops in prop::collection::vec(patch_op(), 0..4), raw in json_value(), on_group in any::<bool>(), wrap in any::<bool>()) {
        let f = fixture_once();
        let target = if on_group { &f.group_path } else { &f.user_path };
        let body = if wrap { json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}) } else { raw };
        let a = f.rt.block_on(f.server.send(Method::PATCH, target, Some(body.clone())));
        check(&a, &body.to_string());
        // The resource is still readable and still has its name.
        let back = f.rt.block_on(f.server.get(target));
        prop_assert_eq!(back.status.as_u16(), 200);
    }

    #[test]
    fn random_bytes_and_headers_never_break_the_server(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        ct in prop_oneof![Just("application/scim+json"), Just("application/json"), Just("text/plain"), Just(""), Just("application/json; charset=utf-8"), Just("application/x-www-form-urlencoded")],
        auth in prop_oneof![Just(Some(TOKEN.to_string())), Just(None), "[ -~]{0,40}".prop_map(Some)],
        method in prop_oneof![Just(Method::POST), Just(Method::PUT), Just(Method::PATCH)],
        collection in prop_oneof![Just("/Users"), Just("/Groups"), Just("/Users/x"), Just("/Schemas"), Just("/Bulk")],
    ) {
        let f = fixture_once();
        let path = if method == Method::POST { collection.to_string() } else { f.user_path.clone() };
        let a = f.rt.block_on(f.server.send_raw(method, &path, auth.as_deref(), Some(bytes), ct));
        check(&a, "random bytes");
    }

    #[test]
    fn random_create_bodies_never_break_the_server(body in json_value(), groups in any::<bool>()) {
        let f = fixture_once();
        let a = f.rt.block_on(f.server.post(if groups { "/Groups" } else { "/Users" }, body.clone()));
        check(&a, &body.to_string());
    }
}

/// One server for all cases of a test binary (starting one per case would dominate the run time).
fn fixture_once() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(fixture)
}
