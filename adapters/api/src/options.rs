//! Reading an app's vendor options (the config keys besides the gateway's own) into a vendor's typed
//! `Config`, with errors that name the offending key by its path (`roles.map`, `group_roles[1].role`)
//! rather than only what serde expected.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Vendor options that do not fit the vendor's `Config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The options are not a map of keys (a list or a scalar where the app's block should be).
    #[error("the adapter config must be a map of keys")]
    NotAMap,
    /// A key is unknown, missing or badly typed. `path` is `.` for the options themselves (a missing key,
    /// which serde's message names).
    #[error("{}", if path == "." { message.clone() } else { format!("`{path}`: {message}") })]
    Key { path: String, message: String },
}

impl OptionsError {
    /// The key path the error is about, if it is about one value.
    pub fn path(&self) -> Option<&str> {
        match self {
            OptionsError::Key { path, .. } if path != "." => Some(path),
            _ => None,
        }
    }
}

/// Parses `options` (`null` is no options) into `T`.
pub fn parse<T: DeserializeOwned>(options: Value) -> Result<T, OptionsError> {
    let options = match options {
        Value::Null => Value::Object(Map::new()),
        map @ Value::Object(_) => map,
        _ => return Err(OptionsError::NotAMap),
    };
    serde_path_to_error::deserialize(options)
        .map_err(|e| OptionsError::Key { path: e.path().to_string(), message: e.into_inner().to_string() })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        base_url: String,
        #[serde(default)]
        limits: Limits,
        #[serde(default)]
        roles: Vec<Role>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        burst: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Role {
        name: String,
    }

    #[test]
    fn errors_name_the_key_by_its_path() {
        let table = [
            (json!({"base_url": 5}), Some("base_url"), "invalid type"),
            (json!({"base_url": "x", "limits": {"burst": "many"}}), Some("limits.burst"), "invalid type"),
            (json!({"base_url": "x", "roles": [{"name": "a"}, {"name": 7}]}), Some("roles[1].name"), "invalid type"),
            (json!({"base_url": "x", "colour": "red"}), Some("colour"), "unknown field `colour`"),
            (json!({}), None, "missing field `base_url`"),
        ];
        for (options, path, message) in table {
            let err = parse::<Options>(options.clone()).unwrap_err();
            assert_eq!(err.path(), path, "{options}: {err}");
            assert!(err.to_string().contains(message), "{options}: {err}");
            if let Some(path) = path {
                assert!(err.to_string().starts_with(&format!("`{path}`: ")), "{err}");
            }
        }
        assert_eq!(parse::<Options>(json!([1])).unwrap_err(), OptionsError::NotAMap);
        assert!(parse::<Limits>(Value::Null).is_ok(), "no options");
    }
}
