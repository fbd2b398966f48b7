//! Service discovery documents (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas, shaped
//! per app so a vendor without groups advertises none.

use serde_json::{json, Value};

use super::schema::{self, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use super::MAX_RESULTS;

pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

/// The app's ServiceProviderConfig. PATCH is advertised only where the vendor can update users (not
/// ProdPad's REST mode). RFC 7643 gives this document no place to list resource types: an app without
/// groups says so through `/ResourceTypes` and `/Schemas`, which leave `Group` out.
pub fn service_provider_config(base: &str, patch: bool) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": patch},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with the app's secret token, sent as 'Authorization: Bearer <token>'",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")}
    })
}

fn user_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User", "name": "User", "endpoint": "/Users", "description": "User Account",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}
    })
}

fn group_type(base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "Group", "name": "Group", "endpoint": "/Groups", "description": "Group",
        "schema": GROUP_SCHEMA, "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}
    })
}

/// The resource types of an app; `Group` only when its vendor keeps groups.
pub fn resource_types(base: &str, groups: bool) -> Vec<Value> {
    let mut types = vec![user_type(base)];
    if groups {
        types.push(group_type(base));
    }
    types
}

/// The schemas of an app; the Group schema only when its vendor keeps groups.
pub fn schemas(base: &str, groups: bool) -> Vec<Value> {
    schema::schema_resources(base)
        .into_iter()
        .filter(|s| groups || s.get("id").and_then(Value::as_str) != Some(GROUP_SCHEMA))
        .collect()
}

/// One entry of a discovery list by its `id` (case-insensitive).
pub fn find_by_id(list: Vec<Value>, id: &str) -> Option<Value> {
    list.into_iter().find(|v| v.get("id").and_then(Value::as_str).is_some_and(|i| i.eq_ignore_ascii_case(id)))
}
