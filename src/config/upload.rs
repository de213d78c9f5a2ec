//! `[upload]`: HTTP File Upload (XEP-0363) at `upload.<domain>`, served on corvid's own HTTP
//! listener. Upload and download URLs start with `http.public_url` when it is set (a reverse
//! proxy in front), else with the domain and the HTTPS port (the HTTP port with HTTPS off).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// The service at all; it only runs when `http.enabled` too, since files go over HTTP.
    pub enabled: bool,
    /// The service's domain is `<prefix>.<domain>` for every hosted domain.
    pub prefix: String,
    /// Where files are kept (relative to the configuration file's folder, like the database).
    pub directory: PathBuf,
    /// Largest file accepted, in bytes. 100 MiB, like ejabberd's `mod_http_upload` (Prosody
    /// picks 10 MiB): files are streamed to disk, never held in memory, so the size only
    /// costs disk, which the quotas bound, and 10 MiB refuses a minute of phone video.
    pub max_file_size: u64,
    /// Bytes one user may upload per 24 hours (a sliding window); 0 = no limit. Ten times
    /// the largest file, as Prosody's default daily quota is.
    pub daily_quota_per_user: u64,
    /// Bytes all stored files may take together; 0 = no limit.
    pub total_quota: u64,
    /// Files are deleted this many seconds after their upload (30 days).
    pub expire_after_secs: u64,
    /// How often expired files are looked for, in seconds.
    pub sweep_interval_secs: u64,
    /// How long a PUT URL stays usable after the slot was given, in seconds.
    pub slot_validity_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            prefix: "upload".to_owned(),
            directory: PathBuf::from("./data/uploads"),
            max_file_size: 100 * MIB,
            daily_quota_per_user: 1000 * MIB,
            total_quota: 0,
            expire_after_secs: 30 * 24 * 3600,
            sweep_interval_secs: 3600,
            slot_validity_secs: 300,
        }
    }
}

impl UploadConfig {
    /// The service domain for the hosted `domain`.
    pub fn service_domain(&self, domain: &str) -> String {
        format!("{}.{domain}", self.prefix)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let label_ok = !self.prefix.is_empty()
            && !self.prefix.starts_with('-')
            && !self.prefix.ends_with('-')
            && self.prefix.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !label_ok {
            return Err(ConfigError::Invalid(format!(
                "upload.prefix '{}' must be lower-case DNS labels (e.g. \"upload\")",
                self.prefix
            )));
        }
        if self.max_file_size == 0 {
            return Err(ConfigError::Invalid(
                "upload.max_file_size must be greater than 0".into(),
            ));
        }
        if self.daily_quota_per_user != 0 && self.daily_quota_per_user < self.max_file_size {
            return Err(ConfigError::Invalid(
                "upload.daily_quota_per_user is smaller than upload.max_file_size: no file that \
                 large could ever be uploaded"
                    .into(),
            ));
        }
        if self.expire_after_secs == 0
            || self.sweep_interval_secs == 0
            || self.slot_validity_secs == 0
        {
            return Err(ConfigError::Invalid(
                "upload.expire_after_secs, sweep_interval_secs and slot_validity_secs must be \
                 greater than 0"
                    .into(),
            ));
        }
        Ok(())
    }
}
