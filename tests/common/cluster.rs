//! A cluster in this test process: `n` corvid nodes sharing one fresh PostgreSQL schema (of
//! `CORVID_TEST_POSTGRES`) and one random Redis key prefix (on `CORVID_TEST_REDIS`, by default
//! the machine's Redis on 127.0.0.1:6379). Node `i` (1-based) is named `n{i}` and listens for
//! clients on 127.0.0.{10+i}, so each has its own address as separate machines would.
//!
//! Without `CORVID_TEST_POSTGRES` `start` returns `None` and the test is skipped, as the other
//! PostgreSQL tests are. `finish` stops the nodes and removes the schema and the Redis keys;
//! a test that panics before it gets the same cleanup from `Drop` (after a bounded wait).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use corvid::config::Config;
use corvid::router::Location;
use corvid::storage::Storage;
use jid::{BareJid, FullJid};

use super::xmpp::Session;
use super::{account, Raw, TestServer, PASSWORD, WAIT};

pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379/";

/// How often the `until_*` helpers look again.
const POLL: Duration = Duration::from_millis(20);

pub struct TestCluster {
    nodes: Vec<Node>,
    /// The shared database without any node's caches in front.
    db: Storage,
    spec: Spec,
    pub schema: String,
    /// Every Redis key of this cluster starts with `"{prefix}:"`.
    pub prefix: String,
    pub redis: String,
    cleaned: bool,
}

/// What every node of one cluster shares.
#[derive(Clone)]
struct Spec {
    postgres: String,
    schema: String,
    redis: String,
    prefix: String,
}

struct Node {
    server: Option<TestServer>,
    /// For a node on a runtime of its own (`start_killable`).
    runtime: Option<NodeRuntime>,
    alive: bool,
}

struct NodeRuntime {
    handle: tokio::runtime::Handle,
    /// Ends the runtime, dropping every task of the node at once.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeRuntime {
    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestCluster {
    /// `n` nodes with the test settings; `None` when `CORVID_TEST_POSTGRES` is not set.
    pub async fn start(n: usize) -> Option<TestCluster> {
        Self::start_with(n, |_, _| {}).await
    }

    /// `start`, and `adjust(i, config)` may change node `i`'s settings first.
    pub async fn start_with(n: usize, adjust: impl Fn(usize, &mut Config)) -> Option<TestCluster> {
        Self::start_on(n, None, adjust).await
    }

    /// `start` on the Redis at `redis` (e.g. a `PrivateRedis` a test stops and starts).
    pub async fn start_on_redis(n: usize, redis: &str) -> Option<TestCluster> {
        Self::start_on(n, Some(redis.to_owned()), |_, _| {}).await
    }

    async fn start_on(
        n: usize,
        redis: Option<String>,
        adjust: impl Fn(usize, &mut Config),
    ) -> Option<TestCluster> {
        let mut cluster = Self::empty(redis).await?;
        for i in 1..=n {
            let server = start_node(&cluster.spec, i, &adjust).await;
            cluster.nodes.push(Node {
                server: Some(server),
                runtime: None,
                alive: true,
            });
        }
        Some(cluster)
    }

    /// `start`, each node on a runtime (and thread) of its own, so that `kill` can make one
    /// vanish at once as a killed process would: its tasks are dropped without running any
    /// cleanup, its sockets close, its heartbeats stop and its Redis entries stay behind.
    pub async fn start_killable(n: usize) -> Option<TestCluster> {
        let mut cluster = Self::empty(None).await?;
        for i in 1..=n {
            let node = spawn_isolated(cluster.spec.clone(), i).await;
            cluster.nodes.push(node);
        }
        Some(cluster)
    }

    /// Starts node `i` (of `start_killable`) again after `kill`, with the same name and
    /// address, as a supervisor restarting a crashed process would.
    pub async fn revive(&mut self, i: usize) {
        assert!(!self.nodes[i - 1].alive, "node n{i} is running");
        self.nodes[i - 1] = spawn_isolated(self.spec.clone(), i).await;
    }

    /// No nodes yet: the fresh schema and prefix.
    async fn empty(redis: Option<String>) -> Option<TestCluster> {
        let Ok(postgres) = std::env::var("CORVID_TEST_POSTGRES") else {
            eprintln!("skipped: CORVID_TEST_POSTGRES not set");
            return None;
        };
        let redis = redis.unwrap_or_else(|| {
            std::env::var("CORVID_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS.into())
        });
        let suffix = super::rand_suffix();
        let schema = format!("corvid_cl_{suffix}");
        let prefix = format!("ctest{suffix}");
        let backend = corvid::storage::PostgresStorage::open_with_schema(&postgres, &schema)
            .await
            .expect("postgres schema");
        Some(TestCluster {
            nodes: Vec::new(),
            db: Storage::from_backend(Arc::new(backend)),
            spec: Spec {
                postgres,
                schema: schema.clone(),
                redis: redis.clone(),
                prefix: prefix.clone(),
            },
            schema,
            prefix,
            redis,
            cleaned: false,
        })
    }

    /// Makes node `i` (of `start_killable`) vanish as a killed process would; it stays
    /// dead. Its clients see their connections close.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i - 1];
        node.runtime
            .as_mut()
            .expect("kill needs a cluster from start_killable")
            .kill();
        node.alive = false;
    }

    /// Stops node `i` as `corvid` does on SIGTERM (its sessions are told
    /// `<system-shutdown/>`, what they had not acknowledged is stored), then starts it again
    /// with the same name on the same address (a new port and certificate). Only for nodes
    /// of `start` / `start_with`.
    pub async fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i - 1];
        assert!(
            node.runtime.is_none(),
            "restart is for nodes on the test's runtime"
        );
        if let Some(TestServer { server, dir, .. }) = node.server.take() {
            tokio::time::timeout(Duration::from_secs(40), server.shutdown())
                .await
                .unwrap_or_else(|_| panic!("node n{i} did not shut down"));
            drop(dir);
        }
        let server = start_node(&self.spec, i, &|_, _| {}).await;
        self.nodes[i - 1].server = Some(server);
    }

    /// The nodes still running.
    pub fn live(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|&i| self.nodes[i - 1].alive)
            .collect()
    }

    /// Node `i`'s client address: 127.0.0.{10+i}.
    pub fn address(i: usize) -> IpAddr {
        let last = u8::try_from(10 + i).expect("a small cluster");
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// Node `i`, 1-based (named `n{i}`).
    pub fn node(&self, i: usize) -> &TestServer {
        assert!(i >= 1 && i <= self.nodes.len(), "no node {i}");
        self.nodes[i - 1].server.as_ref().expect("node still held")
    }

    /// How many nodes there are.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes still running, with their numbers.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &TestServer)> {
        self.live().into_iter().map(|i| (i, self.node(i)))
    }

    /// The shared database, read and written directly: no node's cache (rosters, say) sits
    /// in front of it, so it shows what the nodes committed.
    pub fn storage(&self) -> &Storage {
        &self.db
    }

    /// Accounts, created once in the shared database.
    pub async fn add_users(&self, users: &[&str]) {
        for user in users {
            super::create_account(&self.db, user, PASSWORD).await;
        }
    }

    /// Both directions subscribed, written straight to the database (before anyone logs in,
    /// so that no node has the rosters cached yet).
    pub async fn make_mutual(&self, a: &str, b: &str) {
        super::subscribe_both(&self.db, a, b).await;
    }

    /// Logs in on node `i` and binds (no presence).
    pub async fn login(&self, i: usize, user: &str, resource: &str) -> Session {
        Session::login(self.node(i), user, resource).await
    }

    /// Logs in on node `i`, gets the roster and sends initial presence (see `Session::online`).
    pub async fn online(&self, i: usize, user: &str, resource: &str) -> Session {
        Session::online(self.node(i), user, resource).await
    }

    /// A raw login on node `i`; returns the stream and the bound JID.
    pub async fn raw(&self, i: usize, user: &str, resource: &str) -> (Raw, String) {
        let node = self.node(i);
        Raw::login(node.c2s(), node.tls_config(), user, resource).await
    }

    /// A tokio-xmpp client of node `i`.
    pub fn client(&self, i: usize, user: &str, resource: &str) -> tokio_xmpp::Client {
        self.node(i).client(user, resource, true)
    }

    /// Where node `i` believes `full` is.
    pub fn locate(&self, i: usize, full: &str) -> Location {
        let jid = FullJid::new(full).expect("full jid");
        self.node(i).server.ctx.router.directory().locate(&jid)
    }

    /// Polls (bounded by `WAIT`) until `check` holds; panics with `what` otherwise.
    pub async fn until(&self, what: &str, check: impl Fn(&TestCluster) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(self) {
            if tokio::time::Instant::now() >= deadline {
                panic!("not within {WAIT:?}: {what}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `i` sees `full` bound (here or on another node).
    pub async fn until_visible(&self, i: usize, full: &str) {
        self.until(&format!("n{i} sees {full}"), |c| {
            c.locate(i, full).is_bound()
        })
        .await;
    }

    /// Waits until every node sees `full` bound.
    pub async fn until_visible_everywhere(&self, full: &str) {
        for i in self.live() {
            self.until_visible(i, full).await;
        }
    }

    /// Waits until no node sees `full` bound.
    pub async fn until_gone_everywhere(&self, full: &str) {
        self.until(&format!("{full} unbound on every node"), |c| {
            c.live().into_iter().all(|i| !c.locate(i, full).is_bound())
        })
        .await;
    }

    /// The available resources of `bare` node `i` knows of, with their priorities.
    pub fn available(&self, i: usize, bare: &str) -> Vec<(String, i8)> {
        let bare = BareJid::new(bare).expect("bare jid");
        self.node(i)
            .server
            .ctx
            .router
            .available_resources(&bare)
            .into_iter()
            .map(|(jid, priority)| (jid.to_string(), priority))
            .collect()
    }

    /// Waits until every node knows `full` as available with `priority`.
    pub async fn until_available_everywhere(&self, full: &str, priority: i8) {
        let bare = full.split('/').next().expect("bare part").to_owned();
        self.until(
            &format!("{full} available at {priority} on every node"),
            |c| {
                c.live().into_iter().all(|i| {
                    c.available(i, &bare)
                        .iter()
                        .any(|(jid, p)| jid == full && *p == priority)
                })
            },
        )
        .await;
    }

    /// Waits until no node lists `full` among the available resources.
    pub async fn until_unavailable_everywhere(&self, full: &str) {
        let bare = full.split('/').next().expect("bare part").to_owned();
        self.until(&format!("{full} unavailable on every node"), |c| {
            c.live()
                .into_iter()
                .all(|i| c.available(i, &bare).iter().all(|(jid, _)| jid != full))
        })
        .await;
    }

    /// Offline messages stored for `user`.
    pub async fn offline_count(&self, user: &str) -> u64 {
        self.storage()
            .offline
            .count(&account(user))
            .await
            .expect("offline count")
    }

    /// Waits until `user` has `n` offline messages stored.
    pub async fn until_offline(&self, user: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let count = self.offline_count(user).await;
            if count == n {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{user} has {count} offline messages, not {n}, after {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every Redis key of this cluster (SCAN, for tests only).
    pub fn redis_keys(&self) -> Vec<String> {
        redis_scan(&self.redis, &self.prefix).expect("redis scan")
    }

    /// Stops every node still running (bounded), then drops the schema and the Redis keys.
    pub async fn finish(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let stops = nodes.into_iter().map(|mut node| async move {
            let Some(TestServer { server, dir, .. }) = node.server.take() else {
                return;
            };
            let grace = Duration::from_secs(15);
            match (&mut node.runtime, node.alive) {
                (None, _) => {
                    let _ = tokio::time::timeout(grace, server.shutdown()).await;
                }
                (Some(runtime), true) => {
                    let stopping = runtime.handle.spawn(server.shutdown());
                    let _ = tokio::time::timeout(grace, stopping).await;
                    runtime.kill();
                }
                (Some(_), false) => drop(server),
            }
            drop(dir);
        });
        futures::future::join_all(stops).await;
        self.db.close().await;
        let spec = self.spec.clone();
        cleanup(&spec).await;
        self.cleaned = true;
    }
}

/// Node `i` on a runtime (and thread) of its own.
async fn spawn_isolated(spec: Spec, i: usize) -> Node {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("node runtime");
        runtime.block_on(async move {
            let server = start_node(&spec, i, &|_, _| {}).await;
            let _ = ready_tx.send((server, tokio::runtime::Handle::current()));
            let _ = stop_rx.await;
        });
        // Every task dropped (sockets closed) before `kill` returns, as the kernel closes a
        // killed process's sockets at once; nothing waits for cleanup.
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
    let (server, handle) = tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("node started in time")
        .expect("node thread started the node");
    Node {
        server: Some(server),
        runtime: Some(NodeRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        alive: true,
    }
}

async fn start_node(spec: &Spec, i: usize, adjust: &dyn Fn(usize, &mut Config)) -> TestServer {
    let backend = corvid::storage::PostgresStorage::open_with_schema(&spec.postgres, &spec.schema)
        .await
        .expect("postgres schema");
    let storage = Storage::from_backend(Arc::new(backend));
    let dir = tempfile::tempdir().expect("temp dir");
    let address = TestCluster::address(i);
    let mut config = Config::default();
    config.storage.url = spec.postgres.clone();
    config.tls.cert = dir.path().join("cert.pem");
    config.tls.key = dir.path().join("key.pem");
    config.c2s.bind = address;
    config.c2s.port = 0;
    config.c2s.direct_tls = false;
    config.http.enabled = false;
    config.http.tls_enabled = false;
    config.s2s.enabled = false;
    config.limits.max_connections_per_address = 0;
    config.limits.connection_rate_per_address = 0;
    config.control.socket = dir.path().join("corvid.sock");
    config.metrics.listen = SocketAddr::new(address, 0);
    config.cluster.node = Some(format!("n{i}"));
    config.cluster.redis = Some(spec.redis.clone());
    config.cluster.key_prefix = spec.prefix.clone();
    config.cluster.heartbeat_secs = 1;
    // Long enough that a node starved of CPU for a few seconds (a loaded CI machine runs many
    // clusters at once) is not taken for dead; short enough that a killed one is swept well
    // within `WAIT`.
    config.cluster.node_timeout_secs = 5;
    adjust(i, &mut config);
    if std::env::var_os("CORVID_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
    let server = corvid::server::start_with_storage(Arc::new(config), storage)
        .await
        .unwrap_or_else(|e| panic!("node n{i} starts: {e}"));
    let cert_der = server
        .ctx
        .tls
        .as_ref()
        .map(|t| t.leaf_der(None).to_vec())
        .expect("tls");
    TestServer {
        server,
        dir,
        cert_der,
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A panicking test. Nodes on runtimes of their own end with them; the others still
        // run on the test's runtime, so clean up from a thread of our own (the schema drop
        // gives up on locks a node holds rather than waiting).
        for node in &mut self.nodes {
            if let Some(runtime) = &mut node.runtime {
                runtime.kill();
            }
        }
        let spec = self.spec.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(cleanup(&spec));
            }
            let _ = done_tx.send(());
        });
        // A node frozen with this runtime may hold a lock the schema drop waits for: after a
        // while the test goes on (ending its runtime releases the lock) and the cleaner
        // keeps trying in the background.
        let _ = done_rx.recv_timeout(Duration::from_secs(8));
    }
}

async fn cleanup(spec: &Spec) {
    let Spec {
        postgres,
        schema,
        redis,
        prefix,
    } = spec;
    let _ = redis_delete(redis, prefix);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(postgres)
        .await;
    if let Ok(pool) = pool {
        let _ = sqlx::query("SET lock_timeout = '3s'").execute(&pool).await;
        for _ in 0..10 {
            let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await;
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Just enough RESP to list and delete the cluster's keys, independent of the server's client.

enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

struct RedisConn {
    stream: BufReader<std::net::TcpStream>,
}

impl RedisConn {
    fn open(url: &str) -> std::io::Result<RedisConn> {
        let rest = url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:6379");
        let host = rest.rsplit('@').next().unwrap_or(rest);
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:6379")
        };
        let stream = std::net::TcpStream::connect(host)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(RedisConn {
            stream: BufReader::new(stream),
        })
    }

    fn command(&mut self, args: &[&str]) -> std::io::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out)?;
        self.read()
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches("\r\n").to_owned())
    }

    fn read(&mut self) -> std::io::Result<Resp> {
        let line = self.line()?;
        let bad = || std::io::Error::other(format!("bad RESP line {line:?}"));
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut data = vec![0; len as usize + 2];
                    self.stream.read_exact(&mut data)?;
                    data.truncate(len as usize);
                    Resp::Bulk(Some(data))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                if len < 0 {
                    Resp::Array(None)
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Resp::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}

fn text(resp: &Resp) -> Option<String> {
    match resp {
        Resp::Simple(s) => Some(s.clone()),
        Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Resp::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn redis_scan(url: &str, prefix: &str) -> std::io::Result<Vec<String>> {
    let mut conn = RedisConn::open(url)?;
    let pattern = format!("{prefix}:*");
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let reply = conn.command(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])?;
        let Resp::Array(Some(parts)) = reply else {
            if let Resp::Error(e) = reply {
                return Err(std::io::Error::other(e));
            }
            return Err(std::io::Error::other("unexpected SCAN reply"));
        };
        let mut parts = parts.into_iter();
        cursor = parts.next().as_ref().and_then(text).unwrap_or_default();
        if let Some(Resp::Array(Some(found))) = parts.next() {
            keys.extend(found.iter().filter_map(text));
        }
        if cursor == "0" || cursor.is_empty() {
            return Ok(keys);
        }
    }
}

fn redis_delete(url: &str, prefix: &str) -> std::io::Result<usize> {
    let keys = redis_scan(url, prefix)?;
    let mut conn = RedisConn::open(url)?;
    for chunk in keys.chunks(500) {
        let mut args = vec!["DEL"];
        args.extend(chunk.iter().map(String::as_str));
        conn.command(&args)?;
    }
    Ok(keys.len())
}

// ---------------------------------------------------------------------------------------------
// Session helpers for stanzas whose order across nodes is not the subject.

impl TestCluster {
    /// Logs in on node `i`, gets the roster and sends initial presence without waiting for
    /// anything, so that a test can collect what comes back (the own presence, probes'
    /// answers, offline messages) in whatever order it arrives.
    pub async fn login_available(&self, i: usize, user: &str, resource: &str) -> Session {
        let mut session = self.login(i, user, resource).await;
        session.roster_get().await;
        session.send("<presence/>").await;
        session
    }

    /// Waits until every node sees the module flag `name` (e.g. carbons enabled) on `full`.
    pub async fn until_flag_everywhere(&self, full: &str, name: &str) {
        let jid = FullJid::new(full).expect("full jid");
        self.until(&format!("{name} on {full} everywhere"), |c| {
            c.nodes().all(|(_, node)| {
                let router = &node.server.ctx.router;
                router
                    .session_flag(name)
                    .is_some_and(|flag| router.directory().flags(&jid).contains(flag))
            })
        })
        .await;
    }
}

/// Reads until each of `wanted` has matched a stanza (in any order); returns the matches in
/// the order of `wanted` and skips everything else. After `WAIT` it panics with what is
/// still missing and every stanza it skipped.
pub async fn expect_all(
    session: &mut Session,
    wanted: &[&dyn Fn(&minidom::Element) -> bool],
) -> Vec<minidom::Element> {
    // A little before the raw client's own read timeout (also `WAIT`), so that this report
    // is what a test shows.
    let patience = WAIT - Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + patience;
    let mut found: Vec<Option<minidom::Element>> = vec![None; wanted.len()];
    let mut skipped = Vec::new();
    while found.iter().any(Option::is_none) {
        let Ok(el) = tokio::time::timeout_at(deadline, session.next()).await else {
            let missing: Vec<usize> = (0..wanted.len()).filter(|&k| found[k].is_none()).collect();
            let skipped: Vec<String> = skipped.iter().map(corvid::xml::to_string).collect();
            panic!(
                "{}: within {patience:?} nothing matched the expectations {missing:?} (0-based); \
                 matched {:?}; skipped {skipped:#?}",
                session.jid,
                found
                    .iter()
                    .flatten()
                    .map(corvid::xml::to_string)
                    .collect::<Vec<_>>()
            );
        };
        match (0..wanted.len()).find(|&k| found[k].is_none() && wanted[k](&el)) {
            Some(k) => found[k] = Some(el),
            None => skipped.push(el),
        }
    }
    found.into_iter().flatten().collect()
}

/// `Session::expect`, reporting what it skipped when nothing matches within `WAIT`.
pub async fn expect(
    session: &mut Session,
    pred: impl Fn(&minidom::Element) -> bool,
) -> minidom::Element {
    expect_all(session, &[&pred]).await.remove(0)
}

// ---------------------------------------------------------------------------------------------
// A Redis of the test's own, to stop and start again.

/// A `redis-server` child process on a free loopback port, without persistence; killed when
/// dropped.
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// `None` (with the reason printed) when `redis-server` cannot be started.
    pub async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = PrivateRedis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        if let Err(e) = redis.spawn() {
            eprintln!("skipped: redis-server does not start: {e}");
            return None;
        }
        redis.until_up().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it answers PING.
    async fn until_up(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let pong = RedisConn::open(&self.url()).and_then(|mut c| c.command(&["PING"]));
            if matches!(pong, Ok(Resp::Simple(ref s)) if s == "PONG") {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("private redis-server on port {} not up", self.port);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills it (everything it held is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().expect("redis-server starts again");
        self.until_up().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The machine's Redis.
pub const LOCAL_REDIS: &str = "redis://127.0.0.1:6379/";

/// One node of a cluster: storage on `schema` of the PostgreSQL at `url`, Redis at `redis`
/// with keys under `prefix`, c2s on `ip` (port chosen by the system), everything else off;
/// `adjust` changes any setting last. For tests that start nodes one by one (on runtimes of
/// their own, with settings of their own) rather than as a `TestCluster`.
pub async fn start_one_node(
    url: &str,
    schema: &str,
    prefix: &str,
    name: &str,
    ip: [u8; 4],
    redis: &str,
    adjust: impl FnOnce(&mut Config),
) -> TestServer {
    let backend = corvid::storage::PostgresStorage::open_with_schema(url, schema)
        .await
        .expect("schema");
    let storage = Storage::from_backend(Arc::new(backend));
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::default();
    config.storage.url = url.to_owned();
    config.tls.cert = dir.path().join("cert.pem");
    config.tls.key = dir.path().join("key.pem");
    config.c2s.bind = ip.into();
    config.c2s.port = 0;
    config.c2s.direct_tls = false;
    config.http.enabled = false;
    config.s2s.enabled = false;
    config.control.socket = dir.path().join("corvid.sock");
    config.metrics.enabled = false;
    config.limits.max_connections_per_address = 0;
    config.limits.connection_rate_per_address = 0;
    config.cluster.node = Some(name.to_owned());
    config.cluster.redis = Some(redis.to_owned());
    config.cluster.key_prefix = prefix.to_owned();
    config.cluster.heartbeat_secs = 1;
    config.cluster.node_timeout_secs = 3;
    adjust(&mut config);
    if std::env::var_os("CORVID_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
    let server = corvid::server::start_with_storage(Arc::new(config), storage)
        .await
        .expect("node starts");
    let cert_der = server
        .ctx
        .tls
        .as_ref()
        .map(|t| t.leaf_der(None).to_vec())
        .expect("tls");
    TestServer {
        server,
        dir,
        cert_der,
    }
}
