//! `[private_storage]`: limits of XEP-0049 Private XML Storage, which clients use for legacy
//! bookmarks (XEP-0048), roster notes (XEP-0145) and their own settings.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateStorageConfig {
    /// Largest element stored under one namespace, in bytes of XML; a larger one is refused
    /// with `<not-acceptable/>` and the old one kept.
    pub max_bytes: usize,
    /// Namespaces one account may store; one more is refused with `<resource-constraint/>`.
    pub max_namespaces: u32,
}

impl Default for PrivateStorageConfig {
    fn default() -> Self {
        PrivateStorageConfig {
            // Room for a few hundred bookmarks.
            max_bytes: 64 * 1024,
            max_namespaces: 64,
        }
    }
}

impl PrivateStorageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes < 1024 || self.max_namespaces == 0 {
            return Err(ConfigError::Invalid(
                "private_storage.max_bytes must be at least 1024 and \
                 private_storage.max_namespaces at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    #[test]
    fn example_file_has_the_defaults_and_zero_is_refused() {
        let example = Config::parse(include_str!("../../corvid.toml"), Path::new("corvid.toml"))
            .expect("example parses");
        let defaults = PrivateStorageConfig::default();
        assert_eq!(example.private_storage.max_bytes, defaults.max_bytes);
        assert_eq!(
            example.private_storage.max_namespaces,
            defaults.max_namespaces
        );
        for text in [
            "[private_storage]\nmax_namespaces = 0\n",
            "[private_storage]\nmax_bytes = 10\n",
            "[private_storage]\nmax_keys = 1\n",
        ] {
            assert!(Config::parse(text, Path::new("c.toml")).is_err(), "{text}");
        }
    }
}
