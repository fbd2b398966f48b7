//! Vendor credentials from config: given inline, through an environment variable, or as a file path
//! (`*_file`, for Kubernetes and Docker secrets). Held as `SecretString` so they never reach a log.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// Deserializes an optional credential. Accepts a string or a number (YAML and environment variables turn
/// an all-digit code into a number) and never repeats the value in an error, as serde's own message would.
pub fn deserialize_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    use serde::Deserialize;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(SecretString::from(s))),
        serde_json::Value::Number(n) => Ok(Some(SecretString::from(n.to_string()))),
        _ => Err(serde::de::Error::custom("a credential must be a string")),
    }
}

/// Why a credential could not be read. Each names the key (`api_key`, `access_token`, ...) and never the
/// credential itself.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("give only one of `{key}`, `{key}_env` and `{key}_file`")]
    MoreThanOne { key: String },
    #[error("`{key}_env` names the environment variable {var}, which is unset or empty")]
    EnvUnset { key: String, var: String },
    #[error("`{key}_file`: {} is empty", path.display())]
    FileEmpty { key: String, path: PathBuf },
    #[error("`{key}_file`: cannot read {}: {source}", path.display())]
    FileUnreadable {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("missing `{key}` (or `{key}_env` / `{key}_file`)")]
    Missing { key: String },
}

impl CredentialError {
    /// The config key the error is about (`api_key_file` for a file that cannot be read).
    pub fn key(&self) -> String {
        match self {
            CredentialError::MoreThanOne { key } | CredentialError::Missing { key } => key.clone(),
            CredentialError::EnvUnset { key, .. } => format!("{key}_env"),
            CredentialError::FileEmpty { key, .. } | CredentialError::FileUnreadable { key, .. } => {
                format!("{key}_file")
            }
        }
    }
}

/// Resolves a credential named `key` from exactly one of its three sources. Errors name the key.
pub fn resolve(
    key: &str,
    inline: Option<SecretString>,
    env_var: Option<&str>,
    file: Option<&Path>,
) -> Result<SecretString, CredentialError> {
    let key_ = || key.to_string();
    let given = [inline.is_some(), env_var.is_some(), file.is_some()].iter().filter(|b| **b).count();
    if given > 1 {
        return Err(CredentialError::MoreThanOne { key: key_() });
    }
    if let Some(secret) = inline {
        return Ok(secret);
    }
    if let Some(var) = env_var {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            _ => Err(CredentialError::EnvUnset { key: key_(), var: var.to_string() }),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            Ok(_) => Err(CredentialError::FileEmpty { key: key_(), path: path.to_path_buf() }),
            Err(source) => Err(CredentialError::FileUnreadable { key: key_(), path: path.to_path_buf(), source }),
        };
    }
    Err(CredentialError::Missing { key: key_() })
}

/// A short, stable name for a credential that reveals nothing of it: the first 12 hex digits of its
/// SHA-256, as `sha256:…`. An admin checks which key is configured with `printf %s "$KEY" | sha256sum`.
/// Given an `Authorization` header value, the scheme (`Bearer `) is left out.
pub fn fingerprint(credential_or_header: &str) -> String {
    use sha2::{Digest, Sha256};
    let credential = match credential_or_header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest,
        _ => credential_or_header,
    };
    let digest = Sha256::digest(credential.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn fingerprints_match_sha256sum_and_ignore_the_scheme() {
        // printf %s secret-key | sha256sum | cut -c1-12
        assert_eq!(fingerprint("secret-key"), "sha256:85dbe15d75ef");
        assert_eq!(fingerprint("Bearer secret-key"), "sha256:85dbe15d75ef");
        assert_eq!(fingerprint("bearer secret-key"), "sha256:85dbe15d75ef");
    }

    #[test]
    fn numeric_credentials_are_accepted_and_never_echoed() {
        #[derive(serde::Deserialize)]
        struct C {
            #[serde(default, deserialize_with = "deserialize_opt")]
            code: Option<SecretString>,
        }
        let c: C = serde_json::from_str(r#"{"code": 48213977}"#).unwrap();
        assert_eq!(c.code.unwrap().expose_secret(), "48213977");
        let err = serde_json::from_str::<C>(r#"{"code": [48213977]}"#).err().unwrap().to_string();
        assert!(!err.contains("48213977"), "{err}");
        assert!(serde_json::from_str::<C>("{}").unwrap().code.is_none());
    }

    #[test]
    fn each_source_resolves_and_errors_name_the_key() {
        let inline = resolve("api_key", Some(SecretString::from("k1")), None, None).unwrap();
        assert_eq!(inline.expose_secret(), "k1");

        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.txt");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(resolve("api_key", None, None, Some(&file)).unwrap().expose_secret(), "from-file");

        let missing = resolve("auth_code", None, None, None).unwrap_err().to_string();
        assert!(missing.contains("auth_code"), "{missing}");
        let unset = resolve("token", None, Some("SCIM_BRIDGE_TEST_SURELY_UNSET_VAR"), None).unwrap_err();
        assert_eq!(unset.key(), "token_env");
        let unset = unset.to_string();
        assert!(unset.contains("token_env"), "{unset}");
        let both = resolve("token", Some(SecretString::from("a")), None, Some(&file)).unwrap_err().to_string();
        assert!(both.contains("only one"), "{both}");
    }
}
