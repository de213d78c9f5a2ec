//! A corvid cluster of separate processes for fault tests: each node is the `corvid` binary
//! (`serve -c <file>`) with its own configuration, c2s listener on 127.0.0.{20+i}, log file
//! and control socket, all sharing a fresh schema of `CORVID_TEST_POSTGRES` and a private
//! `redis-server` on a free port that the test may stop and start again. Nodes can be killed
//! with SIGKILL, stopped with SIGTERM and started again.
//!
//! The storage URL selects the schema with libpq's `options` parameter
//! (`?options=-c%20search_path%3D<schema>`, which sqlx passes to the server as the startup
//! option), so no database has to be created; the schema itself is created here first,
//! because `corvid` only creates tables (in the first schema of the search path).
//!
//! Also a small raw client (plain TCP, SASL PLAIN, bind, XEP-0198) whose every call returns
//! an error instead of panicking: nodes die under it on purpose.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The domain every node serves.
pub const CLUSTER_DOMAIN: &str = "localhost";
pub const CLUSTER_PASSWORD: &str = "pw";

fn rand_hex() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// A TCP port nobody listens on at `ip` right now.
pub fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether a program is on the PATH.
pub fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

/// Why the cluster tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if std::env::var_os("CORVID_TEST_POSTGRES").is_none() {
        return Some("CORVID_TEST_POSTGRES is not set (a PostgreSQL database to share)".into());
    }
    if !have_program("redis-server") {
        return Some("no redis-server on the PATH".into());
    }
    None
}

/// Waits until `addr` accepts a TCP connection; false after `max`.
pub async fn wait_port(addr: SocketAddr, max: Duration) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn signal(child: &Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a child of ours that has not been reaped yet.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A private Redis

pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free loopback port, without persistence.
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again) on the same port, empty.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("redis log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.path().display().to_string(),
            ])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        assert!(
            wait_port(self.addr(), Duration::from_secs(10)).await,
            "redis-server did not listen on {}: {}",
            self.addr(),
            self.log()
        );
    }

    /// Kills it (SIGKILL): connections are cut, everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

pub struct Node {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    /// How many times the process was started (each start appends to the log).
    pub starts: u32,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("corvid.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// Settings of a cluster test.
pub struct ClusterOptions {
    pub nodes: usize,
    /// Accounts (password `CLUSTER_PASSWORD`), created with `corvid user import` before start.
    pub users: Vec<String>,
    /// TOML appended to every node's configuration (whole sections only).
    pub extra_toml: String,
    /// `[cluster]` timings.
    pub heartbeat_secs: u64,
    pub node_timeout_secs: u64,
    /// `[stream_management] resume_timeout_secs`.
    pub resume_timeout_secs: u64,
    /// The PostgreSQL server the nodes share, when not `CORVID_TEST_POSTGRES` (a private
    /// instance the test stops and starts).
    pub postgres: Option<String>,
    /// `[storage] timeout_ms`, when not the default.
    pub storage_timeout_ms: Option<u64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            users: Vec::new(),
            extra_toml: String::new(),
            heartbeat_secs: 1,
            node_timeout_secs: 3,
            resume_timeout_secs: 60,
            postgres: None,
            storage_timeout_ms: None,
        }
    }
}

pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub schema: String,
    /// Storage URL the nodes use (the test database, the schema selected).
    pub storage_url: String,
    pub key_prefix: String,
    pub redis: PrivateRedis,
    pub nodes: Vec<Node>,
    /// The PostgreSQL server holding `schema`.
    postgres: String,
}

fn storage_url(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

fn node_toml(node: &Node, url: &str, redis: &str, prefix: &str, o: &ClusterOptions) -> String {
    let dir = node.dir.display();
    format!(
        r#"domain = "{CLUSTER_DOMAIN}"

[log]
level = "info"

[storage]
url = "{url}"
{storage_timeout}

[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"
generate_self_signed = true

[c2s]
bind = "{ip}"
port = {port}
direct_tls = false
require_encryption = false

[http]
enabled = false
tls_enabled = false

[auth]
scram_iterations = 4096
allow_plain = true
allow_plain_without_tls = true
max_concurrent_per_address = 10000
max_failures_per_window = 100000

[limits]
max_connections_per_address = 0
connection_rate_per_address = 0
max_unauthenticated_connections = 0
bytes_rate_per_session = 0
bytes_rate_before_bind = 0
stanza_rate_per_session = 0
offline_messages_per_user = 100000

[stream_management]
resume_timeout_secs = {resume}

[s2s]
enabled = false

[metrics]
enabled = false

[control]
socket = "{dir}/corvid.sock"

[upload]
enabled = false

[cluster]
node = "{name}"
redis = "{redis}"
key_prefix = "{prefix}"
heartbeat_secs = {hb}
node_timeout_secs = {timeout}

{extra}
"#,
        ip = node.addr.ip(),
        port = node.addr.port(),
        resume = o.resume_timeout_secs,
        name = node.name,
        hb = o.heartbeat_secs,
        timeout = o.node_timeout_secs,
        extra = o.extra_toml,
        storage_timeout = o
            .storage_timeout_ms
            .map(|ms| format!("timeout_ms = {ms}"))
            .unwrap_or_default(),
    )
}

impl ProcessCluster {
    /// Creates the schema, starts the private Redis, writes the configurations, creates the
    /// accounts and starts every node. None (with the reason printed) when the test cannot
    /// run here (see `skip_reason`).
    pub async fn start(o: ClusterOptions) -> Option<ProcessCluster> {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return None;
        }
        let base = match &o.postgres {
            Some(url) => url.clone(),
            None => std::env::var("CORVID_TEST_POSTGRES").expect("checked"),
        };
        let schema = format!("corvid_cp_{}", rand_hex());
        let pool = sqlx::PgPool::connect(&base)
            .await
            .expect("CORVID_TEST_POSTGRES connects");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .expect("create schema");
        pool.close().await;
        let url = storage_url(&base, &schema);
        let postgres = base;
        let redis = PrivateRedis::start().await;
        let key_prefix = format!("t{}", rand_hex());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..o.nodes {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i as u8 + 1));
            let node_dir = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let mut node = Node {
                index: i,
                name: format!("n{}", i + 1),
                addr: SocketAddr::new(ip, free_port(ip)),
                config: node_dir.join("corvid.toml"),
                dir: node_dir,
                child: None,
                starts: 0,
            };
            let toml = node_toml(&node, &url, &redis.url(), &key_prefix, &o);
            std::fs::write(&node.config, toml).expect("write config");
            node.starts = 0;
            nodes.push(node);
        }
        let mut cluster = ProcessCluster {
            dir,
            schema,
            storage_url: url,
            key_prefix,
            redis,
            nodes,
            postgres,
        };
        if !o.users.is_empty() {
            cluster.import_users(&o.users).await;
        }
        for i in 0..o.nodes {
            cluster.start_node(i).await;
        }
        Some(cluster)
    }

    /// `corvid user import` through node 1's configuration (they share the database).
    pub async fn import_users(&self, users: &[String]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corvid"))
            .arg("-c")
            .arg(&self.nodes[0].config)
            .args(["user", "import"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("corvid user import runs");
        let mut input = String::new();
        for u in users {
            input.push_str(&format!("{u} {CLUSTER_PASSWORD}\n"));
        }
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).await.expect("write");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("user import finishes")
            .expect("user import output");
        assert!(
            out.status.success(),
            "corvid user import failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Starts node `i`'s process and waits until its c2s port accepts connections.
    pub async fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_corvid"))
            .arg("-c")
            .arg(&node.config)
            .arg("serve")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("corvid serve starts");
        node.child = Some(child);
        node.starts += 1;
        let addr = node.addr;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
            {
                return;
            }
            let node = &mut self.nodes[i];
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                node.child = None;
                panic!(
                    "{} exited at start ({status}); its log:\n{}",
                    node.name,
                    node.log()
                );
            }
            if Instant::now() > end {
                panic!(
                    "{} does not listen on {addr} after 60 s; its log:\n{}",
                    node.name,
                    node.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether node `i`'s process ended by itself (a crash): it was started and is gone.
    pub fn has_exited(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL: the process ends at once, nothing is cleaned up (its heartbeat lapses).
    pub async fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, and waits up to `max` for the ordered shutdown; SIGKILL after that. Returns
    /// whether it exited by itself in time.
    pub async fn stop_node(&mut self, i: usize, max: Duration) -> bool {
        let Some(mut child) = self.nodes[i].child.take() else {
            return true;
        };
        signal(&child, libc::SIGTERM);
        match tokio::time::timeout(max, child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                false
            }
        }
    }

    /// SIGSTOP (`frozen`) or SIGCONT: node `i` keeps its sockets but runs nothing meanwhile,
    /// as a node starved of CPU or stuck in a long pause would.
    pub fn freeze_node(&self, i: usize, frozen: bool) {
        if let Some(child) = &self.nodes[i].child {
            signal(child, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// `corvid ctl <args>` against node `i` (its control socket); stdout, or the error.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_corvid"))
            .arg("-c")
            .arg(&self.nodes[i].config)
            .arg("ctl")
            .args(args)
            .output()
            .await
            .map_err(|e| format!("corvid ctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "corvid ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The last `lines` lines of every node's log, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = n.log();
            let all: Vec<&str> = log.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "---- {} ({}) ----\n",
                n.name,
                n.log_path().display()
            ));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Stops every node and Redis, drops the schema. (Dropping the cluster without this
    /// kills the processes but leaves the schema.)
    ///
    /// With `CORVID_CLUSTER_KEEP` set, the nodes' folders (configurations, logs) are kept and
    /// their path printed.
    pub async fn finish(mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i).await;
        }
        self.redis.kill().await;
        if std::env::var_os("CORVID_CLUSTER_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("cluster folders kept in {}", dir.keep().display());
        }
        if let Ok(pool) = sqlx::PgPool::connect(&self.postgres).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw client that never panics

pub type ClientResult<T> = Result<T, String>;

pub struct Client {
    pub user: String,
    pub node: usize,
    tcp: TcpStream,
    parser: corvid::xml::StreamParser,
    frames: std::collections::VecDeque<corvid::xml::Frame>,
    /// Elements that came while a step waited for its own answer (a message routed to the
    /// session between the bind result and `<enabled/>`); `next` hands them out first.
    held: std::collections::VecDeque<Element>,
    /// XEP-0198: stanzas received since `<enabled/>` or `<resumed/>` (what our `h` says).
    pub handled: u32,
    pub sm: bool,
}

fn stream_open() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{CLUSTER_DOMAIN}' version='1.0'>"
    )
}

fn is_stanza(el: &Element) -> bool {
    matches!(el.name(), "message" | "presence" | "iq")
}

pub const SM: &str = "urn:xmpp:sm:3";

/// What a resumption attempt got.
#[derive(Debug)]
pub enum Resumption {
    /// `<resumed h='…'/>`: the session is back; h counts our stanzas the server handled.
    Resumed(Client, u32),
    /// `<failed h='…'/>` (h if given), and the authenticated stream to bind on.
    Failed(Client, Option<u32>),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({} on node {})", self.user, self.node)
    }
}

impl Client {
    async fn connect(addr: SocketAddr, user: &str, node: usize) -> ClientResult<Client> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{user}: connect {addr}: timeout"))?
            .map_err(|e| format!("{user}: connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(Client {
            user: user.to_owned(),
            node,
            tcp,
            parser: corvid::xml::StreamParser::new(corvid::xml::XmlLimits {
                max_stanza_size: 1 << 20,
                ..corvid::xml::XmlLimits::STORED
            }),
            frames: Default::default(),
            held: Default::default(),
            handled: 0,
            sm: false,
        })
    }

    pub async fn write(&mut self, data: &str) -> ClientResult<()> {
        let r = async {
            self.tcp.write_all(data.as_bytes()).await?;
            self.tcp.flush().await
        };
        tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .map_err(|_| format!("{}: write: timeout", self.user))?
            .map_err(|e| format!("{}: write: {e}", self.user))
    }

    /// The next frame within `wait`: Ok(None) on timeout, Err when the connection ends.
    async fn frame(&mut self, wait: Duration) -> ClientResult<Option<corvid::xml::Frame>> {
        let end = Instant::now() + wait;
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(Some(f));
            }
            let mut buf = [0u8; 16384];
            let n = match tokio::time::timeout_at(end, self.tcp.read(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(format!("{}: connection closed", self.user)),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(format!("{}: read: {e}", self.user)),
            };
            let mut out = Vec::new();
            self.parser
                .feed(&buf[..n], &mut out)
                .map_err(|e| format!("{}: XML: {e:?}", self.user))?;
            self.frames.extend(out);
        }
    }

    /// The next element within `wait` (Ok(None) on timeout). Pings are answered, and with
    /// XEP-0198 on, `<r/>` too and stanzas counted; both are still returned except the
    /// pings and `<r/>`. A stream error or close is an Err.
    pub async fn next(&mut self, wait: Duration) -> ClientResult<Option<Element>> {
        if let Some(el) = self.held.pop_front() {
            return Ok(Some(el));
        }
        self.receive(wait).await
    }

    /// `next` without the held elements: what a step waiting for its own answer reads.
    async fn receive(&mut self, wait: Duration) -> ClientResult<Option<Element>> {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Some(frame) = self.frame(left).await? else {
                return Ok(None);
            };
            let el = match frame {
                corvid::xml::Frame::StreamOpen(_) => continue,
                corvid::xml::Frame::StreamClose => {
                    return Err(format!("{}: stream closed by the server", self.user))
                }
                corvid::xml::Frame::Element(el) => el,
            };
            if el.name() == "error" && el.ns() == corvid::xml::ns::STREAM {
                return Err(format!(
                    "{}: stream error: {}",
                    self.user,
                    String::from(&el)
                ));
            }
            if self.sm && is_stanza(&el) {
                self.handled = self.handled.wrapping_add(1);
            }
            if self.sm && el.is("r", SM) {
                let h = self.handled;
                self.write(&format!("<a xmlns='{SM}' h='{h}'/>")).await?;
                continue;
            }
            if el.name() == "iq"
                && matches!(el.attr("type"), Some("get"))
                && el.has_child("ping", "urn:xmpp:ping")
            {
                let id = el.attr("id").unwrap_or_default().to_owned();
                let from = el.attr("from").unwrap_or(CLUSTER_DOMAIN).to_owned();
                self.write(&format!("<iq type='result' id='{id}' to='{from}'/>"))
                    .await?;
                continue;
            }
            return Ok(Some(el));
        }
    }

    /// The next element, which must come within `wait`.
    async fn expect(&mut self, wait: Duration, step: &str) -> ClientResult<Element> {
        self.receive(wait)
            .await?
            .ok_or_else(|| format!("{}: {step}: nothing within {wait:?}", self.user))
    }

    /// TCP, stream, SASL PLAIN: the server's answer to the authentication (`<success/>` or
    /// `<failure/>`), and the stream.
    pub async fn sasl_plain(
        addr: SocketAddr,
        node: usize,
        user: &str,
    ) -> ClientResult<(Client, Element)> {
        use base64::Engine;
        let wait = Duration::from_secs(10);
        let mut c = Client::connect(addr, user, node).await?;
        c.write(&stream_open()).await?;
        let features = c.expect(wait, "features").await?;
        if features.name() != "features" {
            return Err(format!(
                "{user}: expected features, got {}",
                String::from(&features)
            ));
        }
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{CLUSTER_PASSWORD}"));
        c.write(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await?;
        let answer = c.expect(wait, "SASL").await?;
        Ok((c, answer))
    }

    /// TCP, stream, SASL PLAIN, restart: an authenticated stream, not bound.
    pub async fn authenticate(addr: SocketAddr, node: usize, user: &str) -> ClientResult<Client> {
        let wait = Duration::from_secs(10);
        let (mut c, success) = Client::sasl_plain(addr, node, user).await?;
        if success.name() != "success" {
            return Err(format!("{user}: SASL: {}", String::from(&success)));
        }
        c.parser.reset();
        c.write(&stream_open()).await?;
        let features = c.expect(wait, "features after SASL").await?;
        if features.name() != "features" {
            return Err(format!(
                "{user}: expected features, got {}",
                String::from(&features)
            ));
        }
        Ok(c)
    }

    /// Binds `resource` on an authenticated stream; returns the full JID.
    pub async fn bind(&mut self, resource: &str) -> ClientResult<String> {
        self.write(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        loop {
            let el = self.expect(Duration::from_secs(10), "bind").await?;
            if el.name() == "iq" && el.attr("id") == Some("bind") {
                if el.attr("type") != Some("result") {
                    return Err(format!("{}: bind: {}", self.user, String::from(&el)));
                }
                return el
                    .get_child("bind", corvid::xml::ns::BIND)
                    .and_then(|b| b.get_child("jid", corvid::xml::ns::BIND))
                    .map(|j| j.text())
                    .ok_or_else(|| format!("{}: bind result without jid", self.user));
            }
            self.held.push_back(el);
        }
    }

    /// Authenticated, bound to `resource`, and (with `presence`) available.
    pub async fn login(
        addr: SocketAddr,
        node: usize,
        user: &str,
        resource: &str,
        presence: bool,
    ) -> ClientResult<Client> {
        let mut c = Client::authenticate(addr, node, user).await?;
        c.bind(resource).await?;
        if presence {
            c.write("<presence/>").await?;
        }
        Ok(c)
    }

    /// XEP-0198 on a bound stream; the resumption id when `resume` and the server allows it.
    pub async fn enable_sm(&mut self, resume: bool) -> ClientResult<Option<String>> {
        self.write(&format!(
            "<enable xmlns='{SM}'{}/>",
            if resume { " resume='true'" } else { "" }
        ))
        .await?;
        loop {
            let el = self.expect(Duration::from_secs(10), "enable").await?;
            if el.is("enabled", SM) {
                self.sm = true;
                self.handled = 0;
                return Ok(el.attr("id").map(str::to_owned));
            }
            if el.is("failed", SM) {
                return Err(format!(
                    "{}: enable failed: {}",
                    self.user,
                    String::from(&el)
                ));
            }
            self.held.push_back(el);
        }
    }

    /// Asks to resume `previd` on a fresh authenticated stream to `addr`, having handled `h`.
    pub async fn resume(
        addr: SocketAddr,
        node: usize,
        user: &str,
        previd: &str,
        h: u32,
    ) -> ClientResult<Resumption> {
        let mut c = Client::authenticate(addr, node, user).await?;
        c.write(&format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"))
            .await?;
        loop {
            let el = c.expect(Duration::from_secs(15), "resume").await?;
            if el.is("resumed", SM) {
                let theirs = el
                    .attr("h")
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("{user}: resumed without h: {}", String::from(&el)))?;
                c.sm = true;
                c.handled = h;
                return Ok(Resumption::Resumed(c, theirs));
            }
            if el.is("failed", SM) {
                let theirs = el.attr("h").and_then(|h| h.parse().ok());
                return Ok(Resumption::Failed(c, theirs));
            }
        }
    }

    /// Asks for an ack and waits for `<a/>`; returns its h.
    pub async fn request_ack(&mut self, wait: Duration) -> ClientResult<u32> {
        self.write(&format!("<r xmlns='{SM}'/>")).await?;
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let el = self
                .receive(left)
                .await?
                .ok_or_else(|| format!("{}: no <a/> within {wait:?}", self.user))?;
            if el.is("a", SM) {
                return el
                    .attr("h")
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("{}: <a/> without h", self.user));
            }
            self.held.push_back(el);
        }
    }

    pub async fn close(mut self) {
        let _ = self.write("</stream:stream>").await;
    }
}

/// The sequence number of one of the tests' messages (`id='SEQ'`-independent: from the body
/// `tag SEQ`), and whether it came with `<delay/>` (from offline storage).
pub fn message_seq(el: &Element, tag: &str) -> Option<(u64, bool)> {
    if el.name() != "message" || el.attr("type") == Some("error") {
        return None;
    }
    let body = el.get_child("body", "jabber:client")?.text();
    let mut it = body.split(' ');
    if it.next()? != tag {
        return None;
    }
    let seq = it.next()?.parse().ok()?;
    Some((seq, el.has_child("delay", "urn:xmpp:delay")))
}
