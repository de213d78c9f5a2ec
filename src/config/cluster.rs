//! `[cluster]`: this node's name and, for several nodes serving one service, the Redis
//! instance they share their session directory and cross-node delivery through.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name. Storage gives each name a number for good, and that number is part
    /// of every sortable id the node makes (`crate::ids`), so nodes sharing a database never
    /// make the same id. Unset: the machine's host name.
    pub node: Option<String>,
    /// `redis://host:port/db` of the Redis the nodes share. Unset: a single node, which never
    /// connects to Redis.
    pub redis: Option<String>,
    /// Every key and channel the cluster uses starts with `<key_prefix>:`, so several clusters
    /// (or test runs) can share one Redis.
    pub key_prefix: String,
    /// How often this node says it is alive.
    pub heartbeat_secs: u64,
    /// A node silent this long is dead: the others take over its sessions' cleanup.
    pub node_timeout_secs: u64,
    /// Stanzas for other nodes waiting to be published; beyond it they are handled as
    /// undeliverable (offline storage, or an error to the sender).
    pub queue_limit: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            redis: None,
            key_prefix: "corvid".into(),
            heartbeat_secs: 2,
            node_timeout_secs: 10,
            queue_limit: 65_536,
        }
    }
}

impl ClusterConfig {
    /// The configured name, else the host name, else a fixed name (one node per machine).
    pub fn node_name(&self) -> String {
        if let Some(node) = self
            .node
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            return node.to_owned();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "corvid".to_owned())
    }

    /// The Redis URL when this node is part of a cluster.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    pub(super) fn validate(&self, storage_url: &str) -> Result<(), ConfigError> {
        let Some(redis) = self.redis_url() else {
            return Ok(());
        };
        if !redis.starts_with("redis://") {
            // TLS to Redis (rediss://) is not built in: the nodes and Redis are expected on a
            // private network, as the database is.
            return Err(ConfigError::Invalid(format!(
                "cluster.redis '{redis}' must start with redis:// (TLS to Redis is not supported)"
            )));
        }
        // SQLite is one file on one machine: nodes elsewhere would each have their own.
        if !(storage_url.starts_with("postgres:") || storage_url.starts_with("postgresql:")) {
            return Err(ConfigError::Invalid(
                "a cluster (cluster.redis) needs PostgreSQL storage: set storage.url to \
                 postgres://… (SQLite is a single node's file)"
                    .into(),
            ));
        }
        if self.key_prefix.is_empty()
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::Invalid(
                "cluster.key_prefix must be letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.heartbeat_secs == 0 || self.node_timeout_secs <= self.heartbeat_secs {
            return Err(ConfigError::Invalid(
                "cluster.heartbeat_secs must be above 0 and below cluster.node_timeout_secs".into(),
            ));
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::Invalid(
                "cluster.queue_limit must be above 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_redis() -> ClusterConfig {
        ClusterConfig {
            redis: Some("redis://127.0.0.1:6379/".into()),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn a_cluster_needs_postgresql_and_sane_timings() {
        assert!(ClusterConfig::default()
            .validate("sqlite://./data/corvid.db")
            .is_ok());
        let err = with_redis()
            .validate("sqlite://./data/corvid.db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
        assert!(with_redis().validate("postgres://u@h/db").is_ok());
        let slow = ClusterConfig {
            heartbeat_secs: 10,
            node_timeout_secs: 10,
            ..with_redis()
        };
        assert!(slow.validate("postgres://u@h/db").is_err());
        let odd = ClusterConfig {
            key_prefix: "a b".into(),
            ..with_redis()
        };
        assert!(odd.validate("postgres://u@h/db").is_err());
        for url in ["http://x", "rediss://x"] {
            let not_redis = ClusterConfig {
                redis: Some(url.into()),
                ..ClusterConfig::default()
            };
            assert!(not_redis.validate("postgres://u@h/db").is_err(), "{url}");
        }
    }
}
