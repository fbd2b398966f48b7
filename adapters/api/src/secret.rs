//! Vendor credentials from config: given inline, through an environment variable, or as a file path
//! (`*_file`, for Kubernetes and Docker secrets). Held as `SecretString` so they never reach a log.

use std::path::Path;

use secrecy::SecretString;

/// Resolves a credential named `key` from exactly one of its three sources. Errors name the key.
pub fn resolve(
    key: &str,
    inline: Option<SecretString>,
    env_var: Option<&str>,
    file: Option<&Path>,
) -> Result<SecretString, String> {
    let given = [inline.is_some(), env_var.is_some(), file.is_some()].iter().filter(|b| **b).count();
    if given > 1 {
        return Err(format!("give only one of `{key}`, `{key}_env` and `{key}_file`"));
    }
    if let Some(secret) = inline {
        return Ok(secret);
    }
    if let Some(var) = env_var {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            _ => Err(format!("`{key}_env` names the environment variable {var}, which is unset or empty")),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            Ok(_) => Err(format!("`{key}_file`: {} is empty", path.display())),
            Err(e) => Err(format!("`{key}_file`: cannot read {}: {e}", path.display())),
        };
    }
    Err(format!("missing `{key}` (or `{key}_env` / `{key}_file`)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn each_source_resolves_and_errors_name_the_key() {
        let inline = resolve("api_key", Some(SecretString::from("k1")), None, None).unwrap();
        assert_eq!(inline.expose_secret(), "k1");

        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.txt");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(resolve("api_key", None, None, Some(&file)).unwrap().expose_secret(), "from-file");

        let missing = resolve("auth_code", None, None, None).unwrap_err();
        assert!(missing.contains("auth_code"), "{missing}");
        let unset = resolve("token", None, Some("SCIM_BRIDGE_TEST_SURELY_UNSET_VAR"), None).unwrap_err();
        assert!(unset.contains("token_env"), "{unset}");
        let both = resolve("token", Some(SecretString::from("a")), None, Some(&file)).unwrap_err();
        assert!(both.contains("only one"), "{both}");
    }
}
