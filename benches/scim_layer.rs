//! Micro-benchmarks of the in-process SCIM layer, the work the gateway adds to every Entra request before
//! and after the vendor call: parsing and evaluating Entra's filters, turning Entra's PATCH forms into a
//! change of the stored document, normalising and projecting a user, and the canonical-model round trip
//! the adapters consume. Run with `cargo bench --bench scim_layer`; figures in BENCHMARKS.md.

use std::hint::black_box;

use adapter_api::User;
use criterion::{criterion_group, criterion_main, Criterion};
use scim_bridge::scim::schema::{self, ResourceKind};
use scim_bridge::scim::{filter, patch};
use serde_json::{json, Value};

/// A user as Entra creates it (PROTOCOL.md's full form, enterprise extension included).
fn entra_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "8c3c1e2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
        "userName": "alice.example@contoso.com",
        "active": true,
        "displayName": "Alice Example",
        "title": "Process Analyst",
        "name": {"formatted": "Alice Example", "familyName": "Example", "givenName": "Alice"},
        "emails": [{"primary": true, "type": "work", "value": "alice.example@contoso.com"}],
        "phoneNumbers": [{"type": "work", "value": "+61 8 9000 0000"}, {"type": "mobile", "value": "+61 400 000 000"}],
        "addresses": [{"type": "work", "formatted": "1 Main St", "locality": "Perth", "country": "AU"}],
        "roles": [{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Editor"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "Finance", "employeeNumber": "1042",
            "manager": {"value": "5f1e3a2b-0000-4000-8000-000000000001"}
        }
    })
}

fn normalized_user() -> Value {
    let mut doc = entra_user();
    schema::normalize(ResourceKind::User, &mut doc).expect("the sample user is valid");
    doc
}

fn filters(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter");
    let entra_match = r#"userName eq "alice.example@contoso.com""#;
    let complex = r#"emails[type eq "work" and value co "@contoso.com"] or (title pr and not (active eq false))"#;
    g.bench_function("parse Entra's userName eq", |b| b.iter(|| filter::parse(black_box(entra_match))));
    g.bench_function("parse a nested value-path filter", |b| b.iter(|| filter::parse(black_box(complex))));
    let doc = normalized_user();
    let f = filter::parse(complex).expect("valid filter");
    g.bench_function("evaluate the nested filter on a user", |b| {
        b.iter(|| filter::matches(ResourceKind::User, black_box(&f), black_box(&doc)))
    });
    g.finish();
}

fn patches(c: &mut Criterion) {
    let mut g = c.benchmark_group("patch");
    // Entra's incremental-cycle forms: no-path replace with dotted keys, "False" as a string, a filtered
    // path that creates the missing entry, and an enterprise-extension attribute.
    let update = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "value": {"name.familyName": "Changed", "displayName": "Alice Changed", "active": "False"}},
        {"op": "Add", "path": "phoneNumbers[type eq \"fax\"].value", "value": "+61 8 9000 0001"},
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Audit"}
    ]});
    let doc = normalized_user();
    g.bench_function("parse and apply an Entra user update", |b| {
        b.iter(|| {
            let ops = patch::parse_patch(black_box(&update)).expect("valid patch");
            let mut d = doc.clone();
            patch::apply(ResourceKind::User, &mut d, &ops).expect("applies");
            d
        })
    });
    let members: Vec<Value> = (0..100).map(|i| json!({"value": format!("00000000-0000-4000-8000-{i:012}")})).collect();
    let add_members = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Add", "path": "members", "value": members}]});
    let mut group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Finance"});
    schema::normalize(ResourceKind::Group, &mut group).expect("valid group");
    g.bench_function("add 100 members to a group", |b| {
        b.iter(|| {
            let ops = patch::parse_patch(black_box(&add_members)).expect("valid patch");
            let mut d = group.clone();
            patch::apply(ResourceKind::Group, &mut d, &ops).expect("applies");
            d
        })
    });
    g.finish();
}

fn documents(c: &mut Criterion) {
    let mut g = c.benchmark_group("document");
    let raw = entra_user();
    g.bench_function("normalise an Entra user", |b| {
        b.iter(|| {
            let mut d = black_box(&raw).clone();
            schema::normalize(ResourceKind::User, &mut d).expect("valid");
            d
        })
    });
    let doc = normalized_user();
    let attributes = vec!["userName".to_string(), "emails".to_string()];
    g.bench_function("project to attributes=userName,emails", |b| {
        b.iter(|| schema::project(ResourceKind::User, black_box(&doc), &attributes, &[]))
    });
    g.bench_function("canonical User round trip (from_scim + to_scim)", |b| {
        b.iter(|| User::from_scim(black_box(&doc)).expect("valid").to_scim())
    });
    g.finish();
}

criterion_group!(benches, filters, patches, documents);
criterion_main!(benches);
