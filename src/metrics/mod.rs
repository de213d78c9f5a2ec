//! The server's Prometheus metrics: one registry per running server (never the crate's global
//! default, so several servers in one process, as in the tests, count apart), and the metric
//! families the rest of the server bumps. Everything on the hot path is a pre-resolved child
//! (an atomic add or a lock-free histogram observation); label lookups, which take a lock
//! inside `prometheus`, happen only off the hot path (logins) or once, at construction.

pub mod storage;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing::warn;

use crate::stanza::Kind;

/// The stanza kinds (RFC 6120 §8), in the order the per-kind arrays below hold them.
const KINDS: [Kind; 3] = [Kind::Message, Kind::Presence, Kind::Iq];

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Message => "message",
        Kind::Presence => "presence",
        Kind::Iq => "iq",
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Message => 0,
        Kind::Presence => 1,
        Kind::Iq => 2,
    }
}

/// How a client reached the server: the `transport` label of the session gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP on 5222 (STARTTLS).
    Tcp,
    /// Direct TLS (XEP-0368) on 5223.
    Tls,
    /// WebSocket (RFC 7395), over HTTP or HTTPS.
    Websocket,
    /// BOSH (XEP-0124, XEP-0206), over HTTP or HTTPS.
    Bosh,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Websocket,
        Transport::Bosh,
    ];

    fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Websocket => "websocket",
            Transport::Bosh => "bosh",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Storage calls timed by `storage_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum StorageOp {
    ArchiveAppend,
    ArchiveQuery,
    OfflinePush,
    OfflinePeek,
    OfflineRemove,
}

impl StorageOp {
    const ALL: [StorageOp; 5] = [
        StorageOp::ArchiveAppend,
        StorageOp::ArchiveQuery,
        StorageOp::OfflinePush,
        StorageOp::OfflinePeek,
        StorageOp::OfflineRemove,
    ];

    fn label(self) -> &'static str {
        match self {
            StorageOp::ArchiveAppend => "archive_append",
            StorageOp::ArchiveQuery => "archive_query",
            StorageOp::OfflinePush => "offline_push",
            StorageOp::OfflinePeek => "offline_peek",
            StorageOp::OfflineRemove => "offline_remove",
        }
    }
}

/// Something read only when metrics are scraped (a count another part keeps anyway, such as
/// s2s connections), so that part needs no counter of its own on its hot path.
pub type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The registry and every metric family of one server.
pub struct Metrics {
    registry: Registry,
    sessions: [IntGauge; 4],
    sessions_detached: IntGauge,
    logins: IntCounterVec,
    login_failures: IntCounterVec,
    stanzas_in: [IntCounter; 3],
    stanzas_out: [IntCounter; 3],
    routing: [Histogram; 3],
    queue_depth: Histogram,
    queue_stalls: IntCounter,
    offline_writes: IntCounter,
    offline_full: IntCounter,
    archive_writes: IntCounter,
    storage: [Histogram; 5],
    s2s_connections: IntGauge,
    s2s_links: IntGauge,
    cluster_connected: IntGauge,
    cluster_nodes_alive: IntGauge,
    cluster_queue: IntGauge,
    samplers: Mutex<Vec<Sampler>>,
}

/// Building or registering a family fails only for a malformed name or a duplicate: mistakes
/// in this file, which its unit tests catch.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let c = c?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Latency buckets from 50 µs to 2.5 s: routing is sub-millisecond when healthy, storage a
/// few milliseconds; the top buckets show a stuck database.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// Queue depth buckets up to a full default queue (`limits.session_queue`).
const DEPTH_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
];

impl Metrics {
    pub fn new() -> prometheus::Result<Arc<Metrics>> {
        let registry = Registry::new_custom(Some("corvid".into()), None)?;
        let r = &registry;
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            registered(
                r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                ),
            )
        };
        let counter = |name: &str, help: &str| registered(r, IntCounter::new(name, help));

        let sessions = gauge_vec(
            "c2s_sessions",
            "Client sessions by transport and state: bound (connected, resource bound) or \
             detached (connection lost, waiting for XEP-0198 resumption).",
            &["transport", "state"],
        )?;
        let bound = Transport::ALL.map(|t| sessions.with_label_values(&[t.label(), "bound"]));
        let sessions_detached = sessions.with_label_values(&["none", "detached"]);
        let stanzas_in = counter_vec(
            "stanzas_in_total",
            "Stanzas received from clients, by kind.",
            &["kind"],
        )?;
        let stanzas_out = counter_vec(
            "stanzas_out_total",
            "Stanzas written to clients, by kind.",
            &["kind"],
        )?;
        let routing = histogram_vec(
            "routing_seconds",
            "Time from a client's stanza entering the router to its having been queued for \
             its recipients (or answered), by kind.",
            &["kind"],
            LATENCY_BUCKETS,
        )?;
        let storage = histogram_vec(
            "storage_seconds",
            "Storage call latency, by operation.",
            &["op"],
            LATENCY_BUCKETS,
        )?;

        Ok(Arc::new(Metrics {
            sessions: bound,
            sessions_detached,
            logins: counter_vec(
                "logins_total",
                "Successful client authentications, by SASL mechanism.",
                &["mechanism"],
            )?,
            login_failures: counter_vec(
                "login_failures_total",
                "Failed client authentications, by SASL mechanism and failure condition.",
                &["mechanism", "reason"],
            )?,
            stanzas_in: KINDS.map(|k| stanzas_in.with_label_values(&[kind_label(k)])),
            stanzas_out: KINDS.map(|k| stanzas_out.with_label_values(&[kind_label(k)])),
            routing: KINDS.map(|k| routing.with_label_values(&[kind_label(k)])),
            queue_depth: registered(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "session_queue_depth",
                        "Stanzas waiting in a session's outbound queue when its writer wakes.",
                    )
                    .buckets(DEPTH_BUCKETS.to_vec()),
                ),
            )?,
            queue_stalls: counter(
                "session_queue_stalls_total",
                "Stanzas that found a session's outbound queue full (the session is then \
                 ended as stalled, the stanza stored or bounced).",
            )?,
            offline_writes: counter(
                "offline_writes_total",
                "Messages stored for offline delivery (XEP-0160).",
            )?,
            offline_full: counter(
                "offline_refused_total",
                "Messages refused because the recipient's offline store was full.",
            )?,
            archive_writes: counter(
                "archive_writes_total",
                "Messages written to the archive (XEP-0313), counted per record of each batch.",
            )?,
            storage: StorageOp::ALL.map(|op| storage.with_label_values(&[op.label()])),
            s2s_connections: registered(
                r,
                IntGauge::new(
                    "s2s_connections",
                    "Server-to-server connections open now, inbound and outbound.",
                ),
            )?,
            cluster_connected: registered(
                r,
                IntGauge::new(
                    "cluster_connected",
                    "1 while this node of a cluster reaches Redis (and so the other nodes).",
                ),
            )?,
            cluster_nodes_alive: registered(
                r,
                IntGauge::new(
                    "cluster_nodes_alive",
                    "Other nodes of the cluster seen heartbeating at the last check.",
                ),
            )?,
            cluster_queue: registered(
                r,
                IntGauge::new(
                    "cluster_link_queue",
                    "Stanzas waiting to be published to other nodes.",
                ),
            )?,
            s2s_links: registered(
                r,
                IntGauge::new(
                    "s2s_outbound_links",
                    "Outbound links to other servers open now (a bidirectional stream \
                     carrying ours counts as one).",
                ),
            )?,
            registry,
            samplers: Mutex::new(Vec::new()),
        }))
    }

    /// A bound session on `transport`, counted until the guard drops.
    pub fn session_bound(&self, transport: Transport) -> GaugeGuard {
        GaugeGuard::new(&self.sessions[transport.index()])
    }

    /// A detached session, counted until the guard drops.
    pub fn session_detached(&self) -> GaugeGuard {
        GaugeGuard::new(&self.sessions_detached)
    }

    /// An authentication's outcome: `failure` is the SASL condition when it failed.
    pub fn login(&self, mechanism: &str, failure: Option<&str>) {
        let mechanism = if mechanism.is_empty() {
            "none"
        } else {
            mechanism
        };
        match failure {
            None => self.logins.with_label_values(&[mechanism]).inc(),
            Some(reason) => self
                .login_failures
                .with_label_values(&[mechanism, reason])
                .inc(),
        }
    }

    /// A client's stanza of `kind` enters the router: counted, and timed until the timer
    /// drops (when routing has queued it for its recipients or answered it).
    pub fn stanza_routed(&self, kind: Kind) -> Timer<'_> {
        self.stanzas_in[kind_index(kind)].inc();
        Timer {
            histogram: &self.routing[kind_index(kind)],
            start: Instant::now(),
        }
    }

    /// A stanza written to a client; `name` is its element name (nonzas are not counted).
    pub fn stanza_out(&self, name: &str) {
        let index = match name {
            "message" => 0,
            "presence" => 1,
            "iq" => 2,
            _ => return,
        };
        self.stanzas_out[index].inc();
    }

    /// Times a storage call until the timer drops.
    pub fn storage_timer(&self, op: StorageOp) -> Timer<'_> {
        Timer {
            histogram: &self.storage[op as usize],
            start: Instant::now(),
        }
    }

    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth.observe(depth as f64);
    }

    pub fn queue_stall(&self) {
        self.queue_stalls.inc();
    }

    pub fn offline_written(&self) {
        self.offline_writes.inc();
    }

    pub fn offline_refused(&self) {
        self.offline_full.inc();
    }

    pub fn archive_written(&self, records: usize) {
        self.archive_writes.inc_by(records as u64);
    }

    /// s2s connections as s2s counts them (read at scrape time by a sampler).
    pub fn set_s2s(&self, connections: usize, links: usize) {
        self.s2s_connections.set(connections as i64);
        self.s2s_links.set(links as i64);
    }

    /// Runs `sampler` before every scrape.
    pub fn set_cluster(&self, connected: bool, nodes_alive: usize, queue: usize) {
        self.cluster_connected.set(i64::from(connected));
        self.cluster_nodes_alive.set(nodes_alive as i64);
        self.cluster_queue.set(queue as i64);
    }

    pub fn add_sampler(&self, sampler: Sampler) {
        if let Ok(mut samplers) = self.samplers.lock() {
            samplers.push(sampler);
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        if let Ok(samplers) = self.samplers.lock() {
            for sample in samplers.iter() {
                sample(self);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Keeps a gauge up by one while it lives.
#[must_use = "the gauge goes down again when the guard drops"]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Observes the time since it was made when it drops.
#[must_use = "the time is observed when the timer drops"]
pub struct Timer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_registered_and_rendered() {
        let m = Metrics::new().expect("metrics");
        drop(m.stanza_routed(Kind::Message));
        m.stanza_out("presence");
        m.stanza_out("r");
        m.login("SCRAM-SHA-1", None);
        m.login("PLAIN", Some("not-authorized"));
        drop(m.stanza_routed(Kind::Iq));
        let text = m.render();
        for expected in [
            "corvid_stanzas_in_total{kind=\"message\"} 1",
            "corvid_stanzas_out_total{kind=\"presence\"} 1",
            "corvid_stanzas_out_total{kind=\"iq\"} 0",
            "corvid_logins_total{mechanism=\"SCRAM-SHA-1\"} 1",
            "corvid_login_failures_total{mechanism=\"PLAIN\",reason=\"not-authorized\"} 1",
            "corvid_routing_seconds_count{kind=\"iq\"} 1",
            "corvid_routing_seconds_count{kind=\"message\"} 1",
            "corvid_c2s_sessions{state=\"bound\",transport=\"websocket\"} 0",
            "corvid_session_queue_stalls_total 0",
            "corvid_archive_writes_total 0",
            "corvid_s2s_connections 0",
            "corvid_s2s_outbound_links 0",
            "corvid_storage_seconds_count{op=\"offline_push\"} 0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn session_guards_count_up_and_down() {
        let m = Metrics::new().expect("metrics");
        let a = m.session_bound(Transport::Tls);
        let b = m.session_bound(Transport::Tls);
        let d = m.session_detached();
        assert!(m
            .render()
            .contains("corvid_c2s_sessions{state=\"bound\",transport=\"tls\"} 2"));
        drop((a, b, d));
        let text = m.render();
        assert!(text.contains("corvid_c2s_sessions{state=\"bound\",transport=\"tls\"} 0"));
        assert!(text.contains("corvid_c2s_sessions{state=\"detached\",transport=\"none\"} 0"));
    }

    #[test]
    fn two_servers_count_apart() {
        let (a, b) = (
            Metrics::new().expect("metrics"),
            Metrics::new().expect("metrics"),
        );
        a.offline_written();
        assert!(a.render().contains("corvid_offline_writes_total 1"));
        assert!(b.render().contains("corvid_offline_writes_total 0"));
    }
}
