//! corvid-load: a small, fast XMPP load generator.
//!
//! Runs on a single-threaded tokio runtime (one core; pin it with `taskset`).
//! Each mode prints one JSON line of results on stdout (and appends it to
//! `--out` if given) and a human-readable summary on stderr.

mod accounting;
mod curve;
mod mam;
mod modes;
mod muc;
mod presence;
mod s2s;
mod stats;
mod xml;
mod xmpp;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rustls::pki_types::ServerName;

#[derive(Parser)]
#[command(
    name = "corvid-load",
    version,
    about = "XMPP load generator (idle memory, login rate, 1:1 throughput, latency, presence at login)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Log in N sessions and hold them; report server RSS per idle session.
    Idle(IdleArgs),
    /// Log in idle sessions in steps (--steps 1000,5000,...); report server RSS after each.
    IdleCurve(IdleCurveArgs),
    /// Log in N users as fast as possible (C in flight), closing each after bind.
    LoginRate(Common),
    /// N/2 sender->receiver pairs with a bounded window; report delivered msgs/s.
    Throughput(ThroughputArgs),
    /// Fixed total message rate over N/2 pairs; report delivery latency.
    Latency(LatencyArgs),
    /// One user with N mutually subscribed contacts (--users N, named
    /// CONTACT_PREFIX1..N; --user-prefix is not used) logs in: time and
    /// stanzas of the presence broadcast, probe answers and logout.
    PresenceLogin(PresenceArgs),
    /// R rooms x N occupants (users PREFIX1..PREFIX(R*N)); groupchat
    /// deliveries/s with a window per sender, or latency at a fixed total
    /// delivery rate (--rate); exact loss count.
    MucFanout(MucArgs),
    /// XEP-0313 archive: write rate of M messages from S senders to one
    /// recipient (PREFIX1; senders PREFIX2..PREFIX(S+1)), then the time a new
    /// device takes to page through them with after-id.
    Mam(MamArgs),
    /// Federation: set-up time of a cold server-to-server link (first message
    /// u1@DOMAIN -> u1@PEER_DOMAIN until its delivery) against warm
    /// round trips, in both directions.
    S2sSetup(s2s::S2sSetupArgs),
    /// Cluster faults: pairs send at a fixed rate while a node may be killed
    /// or Redis stopped; every message is then accounted for as delivered,
    /// stored offline (collected by logging the receivers in again),
    /// bounced, or unaccounted.
    Accounting(AccountingArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Tls {
    None,
    Starttls,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Server c2s address (host:port).
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub server: String,
    /// Several servers of one cluster (host:port,host:port,...): user
    /// PREFIXK logs in to server (K-1) mod n. Replaces --server.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// XMPP domain.
    #[arg(long, default_value = "bench.test")]
    pub domain: String,
    /// Number of users (u1..uN).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Prefix of user names (PREFIX1..PREFIXN).
    #[arg(long, default_value = "u")]
    pub user_prefix: String,
    /// Password of every user.
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// Resource bound by every session.
    #[arg(long, default_value = "r")]
    pub resource: String,
    /// Stream encryption.
    #[arg(long, value_enum, default_value_t = Tls::None)]
    pub tls: Tls,
    /// Allow TLS session resumption between logins (default: full handshake
    /// each). login-rate then measures returning clients: a first pass (not
    /// measured) collects the server's session tickets, the measured pass
    /// resumes with them.
    #[arg(long)]
    pub tls_resume: bool,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Timeout of one login, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub login_timeout: f64,
    /// Server PID: its VmRSS is read from /proc/PID/status and reported.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Free-form label copied into the JSON (e.g. the server's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also append the JSON line to this file.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Spread connections over this many loopback source addresses,
    /// 127.0.0.2 upwards, in turn (0: the kernel picks, from 127.0.0.1). One
    /// source address has ~28,000 ephemeral ports towards one server port,
    /// and connect() slows down as they fill up: with tens of thousands of
    /// sessions held, logins become bound by the tool's port search.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u8,
}

/// Receivers on another server (federation): senders log in to `--server`
/// as u1..uN@DOMAIN, receivers to `--peer-server` as u1..uN@PEER_DOMAIN, and
/// uK@DOMAIN sends to uK@PEER_DOMAIN (N pairs, not N/2).
#[derive(Args, Clone, Default)]
pub struct PeerArgs {
    /// c2s address (host:port) of the receivers' server.
    #[arg(long, alias = "peer-addr")]
    pub peer_server: Option<String>,
    /// XMPP domain of the receivers' server.
    #[arg(long, requires = "peer_server")]
    pub peer_domain: Option<String>,
    /// PID of the receivers' server (its CPU use is reported).
    #[arg(long)]
    pub peer_pid: Option<u32>,
}

impl PeerArgs {
    /// The receivers' settings: `c` with the peer's address and domain.
    pub fn common(&self, c: &Common) -> Option<Common> {
        let server = self.peer_server.clone()?;
        Some(Common {
            server,
            servers: Vec::new(),
            domain: self.peer_domain.clone().unwrap_or_else(|| c.domain.clone()),
            pid: self.peer_pid,
            ..c.clone()
        })
    }
}

/// How senders and receivers are paired over the servers of `--servers`.
#[derive(Args, Clone, Copy, Default)]
pub struct PairingArgs {
    /// Sender and receiver of each pair on different servers (each server
    /// holds as many senders as receivers; a sender on server s sends to a
    /// receiver on server s+1 mod n).
    #[arg(long, conflicts_with = "same_node")]
    pub cross_node: bool,
    /// Sender and receiver of each pair on the same server (the same users
    /// per server as --cross-node).
    #[arg(long)]
    pub same_node: bool,
}

impl PairingArgs {
    pub fn pairing(&self) -> modes::Pairing {
        if self.cross_node {
            modes::Pairing::CrossNode
        } else if self.same_node {
            modes::Pairing::SameNode
        } else {
            modes::Pairing::Consecutive
        }
    }
}

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to wait after the last login before reading RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Seconds to keep the sessions open after measuring.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

#[derive(Args)]
pub struct IdleCurveArgs {
    #[command(flatten)]
    pub common: Common,
    /// Session counts at which RSS is read (ascending; users u1..u{last}).
    #[arg(long, value_delimiter = ',', required = true)]
    pub steps: Vec<usize>,
    /// Seconds to wait after each step's last login before reading RSS.
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
}

#[derive(Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages in flight per sender.
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm-up seconds (sent and delivered but not counted).
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Seconds to wait for in-flight messages after the end.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Body padding in bytes (added to "seq timestamp").
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    #[command(flatten)]
    pub peer: PeerArgs,
    #[command(flatten)]
    pub pairing: PairingArgs,
}

#[derive(Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Total messages per second over all pairs.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm-up seconds (sent and delivered but not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait for in-flight messages after the end.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Body padding in bytes (added to "seq timestamp").
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    #[command(flatten)]
    pub peer: PeerArgs,
    #[command(flatten)]
    pub pairing: PairingArgs,
}

#[derive(Args)]
pub struct AccountingArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub pairing: PairingArgs,
    /// Total messages per second over all pairs.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds after the sending stops before the receivers that lost their
    /// connection log in again (to a server that accepts them) and collect
    /// their offline messages.
    #[arg(long, default_value_t = 10.0)]
    pub recover_wait: f64,
    /// Also log in again the receivers that kept their connection (to
    /// collect what was stored offline for them while they were connected,
    /// e.g. during a Redis outage).
    #[arg(long)]
    pub relogin_all: bool,
    /// Offline collection of one receiver ends after this many seconds
    /// without a new message (or when it has all it is owed).
    #[arg(long, default_value_t = 2.0)]
    pub offline_quiet: f64,
    /// Longest offline collection of one receiver, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub offline_timeout: f64,
    /// Do not enable XEP-0198 acks on the senders (then a sender whose
    /// connection breaks cannot tell what its server took).
    #[arg(long)]
    pub no_sm: bool,
}

#[derive(Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub common: Common,
    /// The user who logs in; every contact is on its roster.
    #[arg(long, default_value = "u0")]
    pub subject: String,
    /// Prefix of the contacts' names (PREFIX1..PREFIXN, N = --users).
    #[arg(long, default_value = "c")]
    pub contact_prefix: String,
    /// Measured logins of the subject.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds without any stanza to the subject or a contact that end a phase.
    #[arg(long, default_value_t = 0.5)]
    pub quiet: f64,
    /// Longest a measured phase may take, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub phase_timeout: f64,
    /// Longest the subscription setup may take, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub setup_timeout: f64,
    /// Pause between runs, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
}

#[derive(Args)]
pub struct MucArgs {
    /// (--users is ignored: the mode uses ROOMS*OCCUPANTS users.)
    #[command(flatten)]
    pub common: Common,
    /// Number of rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Occupants per room (distinct users).
    #[arg(long, default_value_t = 100)]
    pub occupants: usize,
    /// Senders per room (the room's first occupants).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages in flight per sender (max mode): a message is done when the
    /// sender reads its own reflection.
    #[arg(long, default_value_t = 5)]
    pub window: usize,
    /// Fixed total deliveries/s over all rooms (latency mode); without it,
    /// senders send as fast as their window allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm-up seconds (sent and delivered but not counted).
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// After the end, wait for in-flight deliveries until none arrives for
    /// this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Longest wait for in-flight deliveries after the end, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub drain_max: f64,
    /// MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub service: Option<String>,
    /// Room names are PREFIX1..PREFIXR (default: b<unix time>r, new rooms each run).
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// Longest the setup (joins, room configuration) may take, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub setup_timeout: f64,
}

#[derive(Args)]
pub struct MamArgs {
    /// (--users is ignored: the mode uses SENDERS+1 users.)
    #[command(flatten)]
    pub common: Common,
    /// Messages sent (and archived) in the run.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Sending users.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages in flight per sender (done when the recipient received it).
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// RSM <max/> of the catch-up pages.
    #[arg(long, default_value_t = 250)]
    pub page: usize,
    /// Longest wait for the archive count to reach the messages sent, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub archive_timeout: f64,
}

impl Common {
    pub fn user(&self, i: usize) -> String {
        format!("{}{}", self.user_prefix, i)
    }

    /// The servers users log in to: `--servers`, else `--server` alone.
    pub fn server_list(&self) -> Vec<String> {
        let list: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            vec![self.server.clone()]
        } else {
            list
        }
    }

    /// Whether users are spread over several servers (`--servers`).
    pub fn spread(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Index in `server_list` of the server user PREFIXK (K >= 1) logs in to.
    pub fn node_of(&self, k: usize) -> usize {
        node_of(k, self.server_list().len())
    }

    /// One login configuration per server of `server_list`, in its order.
    pub async fn login_cfgs(&self, presence: bool) -> Result<Vec<xmpp::LoginCfg>, String> {
        let mut out = Vec::new();
        for server in self.server_list() {
            out.push(self.login_cfg_to(&server, presence).await?);
        }
        Ok(out)
    }

    pub async fn login_cfg(&self, presence: bool) -> Result<xmpp::LoginCfg, String> {
        let server = self.server_list().swap_remove(0);
        self.login_cfg_to(&server, presence).await
    }

    pub async fn login_cfg_to(
        &self,
        server: &str,
        presence: bool,
    ) -> Result<xmpp::LoginCfg, String> {
        let addr: SocketAddr = match server.parse() {
            Ok(a) => a,
            Err(_) => tokio::net::lookup_host(server)
                .await
                .map_err(|e| format!("resolve {server}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {server}: no address"))?,
        };
        let tls = match self.tls {
            Tls::None => None,
            Tls::Starttls => {
                let name = ServerName::try_from(self.domain.clone())
                    .map_err(|e| format!("domain {} as TLS server name: {e}", self.domain))?;
                Some((xmpp::tls_connector(self.tls_resume)?, name))
            }
        };
        Ok(xmpp::LoginCfg {
            addr,
            domain: self.domain.clone(),
            password: self.password.clone(),
            resource: self.resource.clone(),
            tls,
            presence,
            sources: xmpp::SourceAddrs::new(self.source_addrs),
        })
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.login_timeout.max(0.001))
    }
}

/// Index of the server user PREFIXK (K >= 1) logs in to, out of `n`.
pub fn node_of(k: usize, n: usize) -> usize {
    k.saturating_sub(1) % n.max(1)
}

/// Raise the open-files soft limit to the hard limit.
fn raise_nofile() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return None;
        }
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(l.rlim_cur as u64)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stats::start_clock();
    let nofile = raise_nofile();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corvid-load: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        match cli.mode {
            Mode::Idle(a) => modes::idle(a, nofile).await,
            Mode::IdleCurve(a) => curve::idle_curve(a, nofile).await,
            Mode::LoginRate(a) => modes::login_rate(a, nofile).await,
            Mode::Throughput(a) => modes::throughput(a, nofile).await,
            Mode::Latency(a) => modes::latency(a, nofile).await,
            Mode::PresenceLogin(a) => presence::presence_login(a, nofile).await,
            Mode::MucFanout(a) => muc::muc_fanout(a, nofile).await,
            Mode::Mam(a) => mam::mam(a, nofile).await,
            Mode::S2sSetup(a) => s2s::s2s_setup(a, nofile).await,
            Mode::Accounting(a) => accounting::accounting(a, nofile).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corvid-load: error: {e}");
            ExitCode::FAILURE
        }
    }
}
