//! Reloading without a restart (SIGHUP, `RunningServer::reload`, and later an ad-hoc command
//! and `corvid ctl`): the configuration file is read and validated again, the certificates of
//! every hosted domain are swapped in for new handshakes, and what cannot change while the
//! server runs (listeners, storage, the hosted domains) is reported as needing a restart.
//!
//! The settings that do follow a reload live here: `Reloader::config` is the latest validated
//! configuration, and `on_reload` hooks run after each successful reload, so a part that can
//! apply new settings live (an admin list, a registration mode) reads them from here rather
//! than from the configuration the server started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::tls::{TlsContext, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("certificates: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What now applies to new connections (e.g. "certificates").
    pub reloaded: Vec<String>,
    /// Settings that changed in the file but keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

/// Runs after a successful reload with the new configuration.
pub type ReloadHook = Box<dyn Fn(&Config) + Send + Sync>;

pub struct Reloader {
    /// The file `reload` reads; without one (a server configured in code, as tests do) a
    /// reload reads the certificates of the configuration it has again.
    path: Mutex<Option<PathBuf>>,
    current: ArcSwap<Config>,
    tls: Option<Arc<TlsContext>>,
    hooks: Mutex<Vec<ReloadHook>>,
    /// One reload at a time: a SIGHUP during an ad-hoc reload waits rather than interleaving.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(config: Arc<Config>, tls: Option<Arc<TlsContext>>) -> Reloader {
        Reloader {
            path: Mutex::new(None),
            current: ArcSwap::new(config),
            tls,
            hooks: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration file reloads read from now on.
    pub fn set_config_path(&self, path: &Path) {
        if let Ok(mut current) = self.path.lock() {
            *current = Some(path.to_path_buf());
        }
    }

    /// The latest configuration a reload accepted (the start's until then).
    pub fn config(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Runs `hook` after every successful reload.
    pub fn on_reload(&self, hook: ReloadHook) {
        if let Ok(mut hooks) = self.hooks.lock() {
            hooks.push(hook);
        }
    }

    /// Reads the configuration file again, validates it, reloads the certificates and runs the
    /// hooks. On any error nothing has changed: the certificates are all read and checked
    /// before any is served.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.running.lock().await;
        let path = self.path.lock().ok().and_then(|p| p.clone());
        let old = self.current.load_full();
        let result = self.apply(path.as_deref(), &old).await;
        match &result {
            Ok(report) => info!(
                reloaded = ?report.reloaded,
                needs_restart = ?report.needs_restart,
                "reloaded"
            ),
            Err(e) => warn!(error = %e, "reload refused; nothing changed"),
        }
        result
    }

    async fn apply(
        &self,
        path: Option<&Path>,
        old: &Arc<Config>,
    ) -> Result<ReloadReport, ReloadError> {
        let new = match path {
            Some(path) => {
                let path = path.to_path_buf();
                // File reads and certificate parsing are blocking work.
                tokio::task::spawn_blocking(move || Config::load(&path))
                    .await
                    .map_err(|e| ConfigError::Invalid(format!("reading the file failed: {e}")))??
            }
            None => Config::clone(old),
        };
        let mut report = ReloadReport {
            needs_restart: needs_restart(old, &new),
            ..ReloadReport::default()
        };
        if let Some(tls) = &self.tls {
            let tls = tls.clone();
            let config = new.clone();
            tokio::task::spawn_blocking(move || tls.reload(&config))
                .await
                .map_err(|e| ConfigError::Invalid(format!("certificate reload failed: {e}")))??;
            report.reloaded.push("certificates".into());
        }
        if path.is_some() {
            report.reloaded.push("configuration".into());
        }
        self.current.store(Arc::new(new));
        let config = self.current.load_full();
        if let Ok(hooks) = self.hooks.lock() {
            for hook in hooks.iter() {
                hook(&config);
            }
        }
        Ok(report)
    }
}

/// The settings in `new` that differ from `old` and that only a restart applies: the server
/// is built from them once (listeners, storage, the set of hosted domains, the modules'
/// settings). Certificate and key paths are not among them: they are reloaded.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),*) => {
            $(
                if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                    changed.push(stringify!($field).to_string());
                }
            )*
        };
    }
    compare!(
        domain,
        log,
        storage,
        c2s,
        http,
        auth,
        limits,
        pep,
        muc,
        push,
        fast,
        stream_management,
        mam,
        cluster,
        s2s,
        metrics,
        control,
        adhoc,
        registration,
        registration_limits,
        allow_user_invites,
        invite_expiry_secs,
        external_services,
        components,
        upload,
        bosh,
        contact,
        outage
    );
    if old.tls.generate_self_signed != new.tls.generate_self_signed {
        changed.push("tls.generate_self_signed".into());
    }
    let domains = |c: &Config| c.hosts.keys().cloned().collect::<Vec<_>>();
    if domains(old) != domains(new) {
        changed.push("hosts".into());
    }
    for (domain, host) in &new.hosts {
        if let Some(before) = old.hosts.get(domain) {
            // Its admins are read from the reloaded configuration: not a restart's business.
            if format!("{:?}", before.limits) != format!("{:?}", host.limits)
                || before.muc_domain != host.muc_domain
                || before.registration != host.registration
                || before.contact != host.contact
            {
                changed.push(format!("hosts.\"{domain}\""));
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_storage_need_a_restart_certificates_do_not() {
        let old = Config::default();
        let mut new = Config::default();
        new.tls.cert = "/elsewhere/cert.pem".into();
        assert!(needs_restart(&old, &new).is_empty());
        new.c2s.port = 15222;
        new.storage.url = "postgres://db/corvid".into();
        new.metrics.enabled = false;
        assert_eq!(needs_restart(&old, &new), ["storage", "c2s", "metrics"]);
    }
}
