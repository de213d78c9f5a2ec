//! Builds the running server from a config: storage, router with its modules, TLS, listeners.
//! Tests start it in-process on ephemeral ports; `corvid serve` runs it until a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::operator::ServerOperator;
use crate::control::ControlSocket;
use crate::listen::admission::{self, Admission};
use crate::listen::{self, ListenContext};
use crate::metrics::Metrics;
use crate::modules;
use crate::reload::{ReloadError, ReloadReport, Reloader};
use crate::router::{Module, Router};
use crate::s2s::S2s;
use crate::storage::{Storage, StorageError};
use crate::stream::context::StreamContext;
use crate::stream::detached_cap::DetachedCap;
use crate::stream::resumption::Resumption;
use crate::stream::throttle::{AuthThrottle, Limits};
use crate::tls::{TlsContext, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("all {0} node numbers are taken by other node names in this database")]
    NoNodeNumber(u16),
    #[error("{0}")]
    S2s(#[from] crate::s2s::S2sError),
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A started server: its bound addresses, and the tasks to stop it.
pub struct RunningServer {
    pub ctx: Arc<StreamContext>,
    pub c2s_addr: SocketAddr,
    pub direct_tls_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    /// Federation's listeners (STARTTLS, direct TLS) and egress, when `s2s.enabled`.
    pub s2s_addr: Option<SocketAddr>,
    pub s2s_direct_tls_addr: Option<SocketAddr>,
    pub s2s: Option<Arc<S2s>>,
    /// The external components' listener (XEP-0114), when any is configured.
    pub component_addr: Option<SocketAddr>,
    /// `corvid ctl`'s socket, when `control.enabled`.
    pub control: Option<ControlSocket>,
    /// `/metrics`, when `metrics.enabled`.
    pub metrics_addr: Option<SocketAddr>,
    reloader: Arc<Reloader>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Reads the configuration file again (the one `set_config_path` named; without one, the
    /// running configuration) and reloads what can change live, the certificates above all;
    /// the report says what needs a restart. A file that does not validate changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload().await
    }

    /// The configuration file `reload` reads.
    pub fn set_config_path(&self, path: &std::path::Path) {
        self.reloader.set_config_path(path);
    }

    /// Resolves when an administrator asked (XEP-0133) to shut down or restart the service;
    /// whoever runs the server then calls `shutdown`.
    pub async fn stop_requested(&self) -> crate::admin::Stop {
        match self.ctx.router.service::<crate::admin::Lifecycle>() {
            Some(lifecycle) => lifecycle.requested().await,
            None => std::future::pending().await,
        }
    }

    /// Stops the server without losing a message: stops accepting, turns routing to local
    /// users towards offline storage, tells every session `<system-shutdown/>` (what it had
    /// queued or the client had not acknowledged goes to offline storage, detached sessions'
    /// queues too), stores what was routed meanwhile, flushes the archive writer and closes
    /// storage. Bounded: a client that reads nothing gets `FAREWELL_TIMEOUT`s, not more.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(control) = &self.control {
            control.close();
        }
        let router = &self.ctx.router;
        router.shutdown_all();
        if tokio::time::timeout(SESSIONS_GRACE, router.tasks_done())
            .await
            .is_err()
        {
            warn!("sessions still ending after {SESSIONS_GRACE:?}; shutting down anyway");
        }
        if let Some(s2s) = &self.s2s {
            s2s.shutdown().await;
        }
        router.store_late_messages().await;
        router.run_shutdown_hooks().await;
        router.storage().close().await;
        info!("shut down");
    }
}

/// How long shutdown waits for sessions to end: a blocked write, then the farewell, each
/// bounded by their own timeout, and storing what was left, with room to spare.
const SESSIONS_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let config = Arc::new(config);
    let storage = Storage::open_with(&config.storage).await?;
    start_with_storage(config, storage).await
}

/// Rosters kept in memory; a few times the expected number of online users is plenty, since
/// an evicted roster is only reloaded.
const ROSTER_CACHE_USERS: usize = 50_000;

pub async fn start_with_storage(
    config: Arc<Config>,
    storage: Storage,
) -> Result<RunningServer, ServerError> {
    start_with_modules(config, storage, Vec::new()).await
}

/// `start_with_storage`, with `extra` modules registered after the built-in ones (tests use
/// it for stand-ins of outside services, such as a push app server).
pub async fn start_with_modules(
    config: Arc<Config>,
    storage: Storage,
    extra: Vec<Arc<dyn Module>>,
) -> Result<RunningServer, ServerError> {
    let tls = Arc::new(TlsContext::load(&config)?);
    storage.qualify_accounts(&config.domain).await?;
    // Unknown users get the same decoy salt from every start of this server (and every node):
    // the secret is generated once and kept in storage (see `sasl::init_decoy_secret`).
    let decoy = storage
        .secrets
        .server_secret("scram-decoy-salts", &rand::random::<[u8; 32]>())
        .await?;
    if let Ok(decoy) = <[u8; 32]>::try_from(decoy.as_slice()) {
        let _ = crate::sasl::init_decoy_secret(decoy);
    }
    let metrics = Metrics::new()?;
    let node_name = config.cluster.node_name();
    let node = storage
        .nodes
        .node_number(&node_name, crate::ids::NODES)
        .await?
        .ok_or(ServerError::NoNodeNumber(crate::ids::NODES))?;
    info!(node = %node_name, number = node, "node identity");
    let (storage, roster_cache) = storage
        .with_batched_login_times()
        .with_shared_roster_cache(ROSTER_CACHE_USERS);
    let storage = modules::upload::attach_files(storage, &config);
    let storage = crate::metrics::storage::measured(storage, &metrics);
    let mut all = modules::all(&config);
    let s2s = if config.s2s.enabled {
        // Every node derives dialback keys from the same stored secret, so any of them can
        // answer a verification for a stream another opened.
        let secret = storage
            .secrets
            .server_secret(
                crate::s2s::dialback::SECRET_NAME,
                &rand::random::<[u8; 32]>(),
            )
            .await?;
        let s2s = S2s::new(config.clone(), tls.clone(), &secret)?;
        all.push(s2s.clone());
        Some(s2s)
    } else {
        None
    };
    // A node of a cluster (`cluster.redis`): its directory also knows the other nodes'
    // sessions, and its link reaches them.
    let cluster = match config.cluster.redis_url() {
        Some(_) => {
            let cluster = crate::cluster::Cluster::new(
                &config.cluster,
                crate::router::NodeId(node),
                node_name.clone(),
            )?;
            cluster.share_roster_cache(roster_cache);
            all.push(cluster.clone());
            Some(cluster)
        }
        None => None,
    };
    let components = crate::modules::component::ExternalComponents::new(&config);
    all.extend(components.iter().map(|c| c.clone() as Arc<dyn Module>));
    all.extend(extra);
    let router = Router::new(config.clone(), storage, all, node, metrics.clone());
    if let Some(cluster) = &cluster {
        cluster.start(&router);
    }
    let reloader = Arc::new(Reloader::new(config.clone(), Some(tls.clone())));
    router.set_reloader(reloader.clone());
    let ctx = Arc::new(StreamContext {
        config: config.clone(),
        router,
        tls: Some(tls),
        throttle: AuthThrottle::new(Limits::from(&config.auth)),
        resumption: Resumption::default(),
        detached: DetachedCap::new(config.limits.max_detached_sessions_per_account),
        registrations: crate::registration::RegistrationLimiter::new(&config.registration_limits),
    });
    let listeners = Arc::new(ListenContext {
        streams: ctx.clone(),
        admission: Admission::new(admission::Limits::from(&config.limits)),
    });
    let mut tasks = Vec::new();

    let receive_buffer = config.c2s.receive_buffer_bytes;
    let c2s = bind_c2s(
        SocketAddr::new(config.c2s.bind, config.c2s.port),
        receive_buffer,
    )?;
    let c2s_addr = local_addr(&c2s)?;
    tasks.push(tokio::spawn(listen::tcp::serve(
        c2s,
        listeners.clone(),
        false,
    )));
    info!(%c2s_addr, "c2s (STARTTLS) listening");

    let mut direct_tls_addr = None;
    if config.c2s.direct_tls {
        let addr = SocketAddr::new(config.c2s.bind, config.c2s.direct_tls_port);
        let listener = bind_c2s(addr, receive_buffer)?;
        let addr = local_addr(&listener)?;
        tasks.push(tokio::spawn(listen::tcp::serve(
            listener,
            listeners.clone(),
            true,
        )));
        info!(%addr, "c2s (direct TLS) listening");
        direct_tls_addr = Some(addr);
    }

    let mut http_addr = None;
    let mut https_addr = None;
    let http = if config.http.enabled {
        let listener = bind(SocketAddr::new(config.http.bind, config.http.port)).await?;
        http_addr = Some(local_addr(&listener)?);
        Some(listener)
    } else {
        None
    };
    // `http.enabled` is the switch for both listeners: off means no HTTP at all.
    let https = if config.http.enabled && config.http.tls_enabled {
        let listener = bind(SocketAddr::new(config.http.bind, config.http.tls_port)).await?;
        https_addr = Some(local_addr(&listener)?);
        Some(listener)
    } else {
        None
    };
    let url = listen::http::announced_urls(
        &ctx,
        http_addr.map_or(config.http.port, |a| a.port()),
        https_addr.map(|a| a.port()),
    );
    if let (Some(listener), Some(addr)) = (http, http_addr) {
        tasks.push(tokio::spawn(listen::http::serve(
            listener,
            listeners.clone(),
            url.clone(),
        )));
        info!(%addr, "HTTP (WebSocket, host-meta) listening");
    }
    if let (Some(listener), Some(addr), Some(tls)) = (https, https_addr, ctx.tls.clone()) {
        tasks.push(tokio::spawn(listen::http::serve_tls(
            listener,
            listeners.clone(),
            url,
            tls.https.clone(),
        )));
        info!(%addr, "HTTPS (secure WebSocket, host-meta) listening");
    }

    let mut component_addr = None;
    if let Some(components) = components {
        let addr = SocketAddr::new(config.components.bind, config.components.port);
        let listener = bind(addr).await?;
        let addr = local_addr(&listener)?;
        let router = ctx.router.clone();
        tasks.push(tokio::spawn(components.serve(router, listener)));
        info!(%addr, "external components (XEP-0114) listening");
        component_addr = Some(addr);
    }
    modules::upload::listening(&ctx.router, http_addr, https_addr);

    let mut s2s_addr = None;
    let mut s2s_direct_tls_addr = None;
    if let Some(s2s) = &s2s {
        crate::s2s::attach(s2s, &ctx.router);
        let s2s_config = &config.s2s;
        let listener = bind(SocketAddr::new(s2s_config.bind, s2s_config.port)).await?;
        let addr = local_addr(&listener)?;
        tasks.push(tokio::spawn(s2s.clone().serve(listener, false)));
        info!(%addr, "s2s (STARTTLS) listening");
        s2s_addr = Some(addr);
        if s2s_config.direct_tls {
            let addr = SocketAddr::new(s2s_config.bind, s2s_config.direct_tls_port);
            let listener = bind(addr).await?;
            let addr = local_addr(&listener)?;
            tasks.push(tokio::spawn(s2s.clone().serve(listener, true)));
            info!(%addr, "s2s (direct TLS) listening");
            s2s_direct_tls_addr = Some(addr);
        }
    }

    let control = if config.control.enabled {
        let operator = Arc::new(ServerOperator::new(ctx.router.clone(), s2s.clone()));
        Some(ControlSocket::bind(&config.control.socket, operator).await?)
    } else {
        None
    };
    let mut metrics_addr = None;
    if config.metrics.enabled {
        if let Some(s2s) = &s2s {
            let s2s = s2s.clone();
            metrics.add_sampler(Box::new(move |m| {
                m.set_s2s(s2s.connection_count(), s2s.link_count())
            }));
        }
        // Metrics are for watching the server, not part of serving it: a port already taken
        // (a second server on the host) is logged, and the server runs without them.
        match bind(config.metrics.listen).await {
            Ok(listener) => {
                let addr = local_addr(&listener)?;
                tasks.push(tokio::spawn(listen::metrics::serve(
                    listener,
                    metrics.clone(),
                )));
                info!(%addr, "metrics (/metrics) listening");
                metrics_addr = Some(addr);
            }
            Err(e) => error!(error = %e, "metrics listener not started"),
        }
    }

    Ok(RunningServer {
        ctx,
        c2s_addr,
        direct_tls_addr,
        http_addr,
        https_addr,
        s2s_addr,
        s2s_direct_tls_addr,
        s2s,
        component_addr,
        control,
        metrics_addr,
        reloader,
        tasks,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })
}

/// A client listener. Accepted sockets inherit its receive buffer size, when one is set.
fn bind_c2s(addr: SocketAddr, receive_buffer: u32) -> Result<TcpListener, ServerError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // What `TcpListener::bind` does too: a restart may bind while old connections linger.
        socket.set_reuseaddr(true)?;
        if receive_buffer > 0 {
            socket.set_recv_buffer_size(receive_buffer)?;
        }
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| ServerError::Listen { addr, source })
}

/// Connections the kernel queues for `accept`, as `TcpListener::bind` asks for.
const LISTEN_BACKLOG: u32 = 1024;

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
