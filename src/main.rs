//! The `corvid` command line: run the server, check a config, manage accounts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corvid::config::Config;
use corvid::storage::{ScramHash, Storage, StorageError};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the system's malloc: see Cargo.toml for why.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "corvid", version, about = "A standards-based XMPP server")]
struct Cli {
    /// Configuration file; the built-in defaults apply when it does not exist.
    #[arg(short, long, global = true, default_value = "corvid.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration file and report what is wrong.
    CheckConfig,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Talk to the running server through its control socket (`[control] socket`).
    Ctl(CtlArgs),
    /// Manage invites (XEP-0401): links that let someone create an account.
    #[command(subcommand)]
    Invite(InviteCommand),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// Print the server's answer as JSON (one object) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

/// XEP-0133's admin commands (`corvid ctl commands` lists every one the server offers; `run`
/// runs any of them with the fields XEP-0133 names).
#[derive(Subcommand)]
enum CtlCommand {
    /// Whether the server runs: version, domains, sessions, federation links.
    Status,
    /// The admin commands the server offers (XEP-0050 nodes and names).
    Commands,
    /// Registered accounts.
    Users,
    /// Accounts with at least one session.
    Online,
    /// Ends every session of an account.
    Kick { jid: String },
    /// Sends a message to every online user.
    Announce { text: String },
    /// Disables an account: its sessions end and it cannot log in.
    Disable { jid: String },
    /// Lets a disabled account log in again.
    Enable { jid: String },
    /// The MUC rooms of every hosted domain.
    Rooms,
    /// Rereads the configuration and the TLS certificates.
    Reload,
    /// Stops the server, after `delay` seconds and an announcement to everyone online.
    Shutdown {
        #[arg(long, default_value_t = 0)]
        delay: u64,
        #[arg(long)]
        message: Option<String>,
    },
    /// Runs any admin command: `corvid ctl run <node> field=value …` (a field given twice
    /// has two values).
    Run { node: String, fields: Vec<String> },
    /// The nodes of the cluster: name, number, health, sessions, heartbeat age, state.
    Cluster {
        #[command(subcommand)]
        action: Option<ClusterCommand>,
    },
}

/// `corvid ctl cluster drain|undrain`, on the node whose control socket is used.
#[derive(Subcommand)]
enum ClusterCommand {
    /// Stop taking logins; resumable sessions are asked to resume on another node.
    Drain,
    /// Take logins again.
    Undrain,
}

#[derive(Subcommand)]
enum InviteCommand {
    /// Create an invite and print its link.
    Create {
        /// The inviting account (`alice` or `alice@domain`); the operator when unset.
        #[arg(long = "for")]
        inviter: Option<String>,
        /// Make the new account and the inviter mutual contacts.
        #[arg(long)]
        roster: bool,
        /// The hosted domain of the new account (the inviter's, else the main domain).
        #[arg(long)]
        domain: Option<String>,
        /// The only username the invite may create.
        #[arg(long)]
        username: Option<String>,
        /// Seconds the invite stays usable (`invite_expiry_secs` by default).
        #[arg(long)]
        expiry_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (`alice` or `alice@domain`).
    Add {
        user: String,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and everything stored for it.
    Del { user: String },
    /// Change an account's password.
    Passwd {
        user: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: it cannot log in (its sessions end when the server runs).
    Disable { user: String },
    /// Let a disabled account log in again.
    Enable { user: String },
    /// List accounts.
    List,
    /// Create many accounts: one `user password` pair per line of standard input.
    /// Existing accounts are left as they are and reported.
    Import,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli.config, matches!(cli.command, Command::CheckConfig)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("corvid: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::CheckConfig = cli.command {
        // Federation routes are parsed as the server would at start.
        if config.s2s.enabled {
            if let Err(e) = corvid::s2s::resolve::Resolver::new(&config.s2s) {
                eprintln!("corvid: {}: {e}", cli.config.display());
                return ExitCode::FAILURE;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let findings = corvid::tls::check::check_certificates(&config, now);
        for finding in &findings {
            eprintln!("corvid: {finding}");
        }
        let errors = findings
            .iter()
            .filter(|f| f.severity == corvid::tls::check::Severity::Error)
            .count();
        if errors > 0 {
            eprintln!(
                "corvid: {}: {errors} certificate problem(s)",
                cli.config.display()
            );
            return ExitCode::FAILURE;
        }
        println!(
            "{}: ok (domain {}, storage {})",
            cli.config.display(),
            config.domain,
            config.storage.url
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("corvid: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config, &cli.config).await,
            Command::User(command) => user(config, command).await,
            Command::Ctl(args) => ctl(&config, args).await,
            Command::Invite(command) => invite(config, command).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("corvid: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The file if it exists; the defaults if it does not (unless checking, where a missing file
/// is the error to report).
fn load_config(path: &Path, must_exist: bool) -> Result<Config, String> {
    if !path.exists() && !must_exist {
        let config = Config::default();
        config.validate().map_err(|e| e.to_string())?;
        return Ok(config);
    }
    Config::load(path).map_err(|e| e.to_string())
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let filter =
            EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
        // PostgreSQL's notices ("relation _sqlx_migrations already exists, skipping" on every
        // start and every `corvid user`) are not news; its warnings still are.
        match "sqlx::postgres::notice=warn".parse() {
            Ok(quiet) => filter.add_directive(quiet),
            Err(_) => filter,
        }
    });
    // Colour escapes only for a person at a terminal: a file or a journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        corvid::config::LogFormat::Text => builder.init(),
        corvid::config::LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config, path: &Path) -> Result<(), String> {
    let Signals {
        mut term,
        mut interrupt,
        mut hangup,
    } = Signals::install();
    let server = corvid::server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    // Running on the built-in defaults, a reload re-reads the certificates only.
    if path.exists() {
        server.set_config_path(path);
    }
    // SIGTERM (service managers, `kill`), SIGINT (Ctrl-C) and an administrator's shutdown or
    // restart command (XEP-0133, `corvid ctl shutdown`) take the same ordered path: sessions
    // told, undelivered messages stored, archive flushed, storage closed. SIGHUP reloads.
    let requested = tokio::select! {
        signal = stop_signal(&mut term, &mut interrupt) => {
            tracing::info!(signal, "shutting down");
            None
        }
        stop = server.stop_requested() => {
            tracing::info!(?stop, "shutting down on an administrator's request");
            Some(stop)
        }
        never = reload_on_hangup(&server, &mut hangup) => match never {},
    };
    server.shutdown().await;
    if requested == Some(corvid::admin::Stop::Restart) {
        // A service manager starts the server again (see `RESTART_EXIT_CODE`).
        std::process::exit(corvid::admin::lifecycle::RESTART_EXIT_CODE);
    }
    Ok(())
}

/// The signals `serve` acts on, installed before the server starts: a signal sent as soon as
/// the listeners answer must find its handler, or its default action applies (SIGHUP's kills
/// the process instead of reloading it).
struct Signals {
    term: Option<Signal>,
    interrupt: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    fn install() -> Signals {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot handle this signal");
                None
            }
        };
        Signals {
            term: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
            hangup: install(SignalKind::hangup(), "SIGHUP"),
        }
    }
}

/// Waits for SIGTERM or SIGINT; returns which one came.
async fn stop_signal(term: &mut Option<Signal>, interrupt: &mut Option<Signal>) -> &'static str {
    tokio::select! {
        _ = next(term) => "SIGTERM",
        _ = next(interrupt) => "SIGINT",
    }
}

/// The next delivery of `signal`; never, for one that could not be installed.
async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Reloads the configuration and certificates on every SIGHUP (as Prosody and ejabberd do),
/// for as long as the server runs; a refused reload is logged and changes nothing.
async fn reload_on_hangup(
    server: &corvid::server::RunningServer,
    hangup: &mut Option<Signal>,
) -> std::convert::Infallible {
    loop {
        next(hangup).await;
        tracing::info!("SIGHUP: reloading");
        // The outcome is logged by the reload itself.
        let _ = server.reload().await;
    }
}

/// XEP-0133's node names, as the server's ad-hoc commands register them.
const ADMIN_NODE: &str = "http://jabber.org/protocol/admin#";

async fn ctl(config: &Config, args: CtlArgs) -> Result<(), String> {
    use corvid::control::protocol::Request;
    let run = |command: &str, fields: &[(&str, Vec<String>)]| Request::Run {
        node: format!("{ADMIN_NODE}{command}"),
        fields: fields
            .iter()
            .map(|(name, values)| ((*name).to_owned(), values.clone()))
            .collect(),
    };
    let request = match args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Commands => Request::Commands,
        CtlCommand::Users => run("get-registered-users-list", &[]),
        CtlCommand::Online => run("get-online-users-list", &[]),
        CtlCommand::Kick { jid } => run("end-user-session", &[("accountjids", vec![jid])]),
        CtlCommand::Announce { text } => run("announce", &[("announcement", vec![text])]),
        CtlCommand::Disable { jid } => run("disable-user", &[("accountjids", vec![jid])]),
        CtlCommand::Enable { jid } => run("reenable-user", &[("accountjids", vec![jid])]),
        CtlCommand::Rooms => Request::Run {
            node: corvid::modules::adhoc::LIST_ROOMS.to_owned(),
            fields: Default::default(),
        },
        CtlCommand::Reload => Request::Run {
            node: corvid::modules::adhoc::RELOAD.to_owned(),
            fields: Default::default(),
        },
        CtlCommand::Shutdown { delay, message } => {
            let mut fields = vec![("delay", vec![delay.to_string()])];
            if let Some(message) = message {
                fields.push(("announcement", vec![message]));
            }
            run("shutdown", &fields)
        }
        CtlCommand::Cluster { action } => {
            use corvid::control::protocol::ClusterAction;
            Request::Cluster {
                action: match action {
                    None => ClusterAction::List,
                    Some(ClusterCommand::Drain) => ClusterAction::Drain,
                    Some(ClusterCommand::Undrain) => ClusterAction::Undrain,
                },
            }
        }
        CtlCommand::Run { node, fields } => {
            let mut submitted = std::collections::BTreeMap::<String, Vec<String>>::new();
            for field in fields {
                let (name, value) = field
                    .split_once('=')
                    .ok_or_else(|| format!("'{field}': expected name=value"))?;
                submitted
                    .entry(name.to_owned())
                    .or_default()
                    .push(value.to_owned());
            }
            Request::Run {
                node,
                fields: submitted,
            }
        }
    };
    let outcome = corvid::control::client::request(&config.control.socket, &request)
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        let json = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", corvid::control::render::text(&outcome));
    }
    Ok(())
}

/// Tells a running server what `corvid user` changed in storage, so it takes effect at once
/// (a deleted account's sessions end). Nothing to do when no server runs.
async fn tell_running_server(
    config: &Config,
    account: &str,
    change: corvid::control::protocol::AccountChange,
) {
    use corvid::control::client::{self, ClientError};
    use corvid::control::protocol::Request;
    if !config.control.enabled {
        return;
    }
    let request = Request::AccountChanged {
        jid: account.to_owned(),
        change,
    };
    match client::request(&config.control.socket, &request).await {
        Ok(_) | Err(ClientError::NotRunning { .. }) => {}
        Err(e) => eprintln!("corvid: the running server was not told: {e}"),
    }
}

async fn user(config: Config, command: UserCommand) -> Result<(), String> {
    use corvid::control::protocol::AccountChange;
    let storage = Storage::open_for(&config)
        .await
        .map_err(|e| e.to_string())?;
    let accounts = &storage.accounts;
    let iterations = config.auth.scram_iterations;
    let (account, result, done, change) = match command {
        UserCommand::List => {
            for account in accounts.list_accounts().await.map_err(|e| e.to_string())? {
                println!("{account}");
            }
            return Ok(());
        }
        UserCommand::Import => return import(&storage, &config, iterations).await,
        UserCommand::Add {
            user,
            password_stdin,
        } => {
            let account = account(&user, &config)?;
            let creds = credentials(&read_password(password_stdin)?, iterations)?;
            let result = accounts.create_account(&account, &creds).await;
            if result.is_ok() {
                // The domain's welcome message, if an administrator set one (XEP-0133).
                if let Ok(jid) = jid::BareJid::new(&account) {
                    if let Err(e) =
                        corvid::admin::accounts::welcome_stored(&storage, &config, &jid).await
                    {
                        eprintln!("the welcome message could not be stored: {e}");
                    }
                }
            }
            (account, result, "created", AccountChange::Created)
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let account = account(&user, &config)?;
            let creds = credentials(&read_password(password_stdin)?, iterations)?;
            let result = accounts.set_credentials(&account, &creds).await;
            (
                account,
                result,
                "password changed for",
                AccountChange::PasswordChanged,
            )
        }
        UserCommand::Disable { user } => {
            let account = account(&user, &config)?;
            let result = storage.admin.set_disabled(&account, true).await;
            (account, result, "disabled", AccountChange::Disabled)
        }
        UserCommand::Enable { user } => {
            let account = account(&user, &config)?;
            let result = storage.admin.set_disabled(&account, false).await;
            (account, result, "enabled", AccountChange::Enabled)
        }
        UserCommand::Del { user } => {
            let account = account(&user, &config)?;
            let result = storage.delete_account_and_archive(&account).await;
            (account, result, "deleted", AccountChange::Deleted)
        }
    };
    match result {
        Ok(()) => {
            println!("{done} {account}");
            tell_running_server(&config, &account, change).await;
            Ok(())
        }
        Err(StorageError::Conflict) => Err(format!("{account} already exists")),
        Err(StorageError::NotFound) => Err(format!("{account} does not exist")),
        Err(e) => Err(e.to_string()),
    }
}

async fn invite(config: Config, command: InviteCommand) -> Result<(), String> {
    let InviteCommand::Create {
        inviter,
        roster,
        domain,
        username,
        expiry_secs,
    } = command;
    let storage = Storage::open_for(&config)
        .await
        .map_err(|e| e.to_string())?;
    let inviter = match inviter {
        Some(user) => {
            let account = account(&user, &config)?;
            Some(jid::BareJid::new(&account).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    if roster && inviter.is_none() {
        return Err("--roster needs --for: whose contact would the new account become?".into());
    }
    let domain = domain
        .or_else(|| inviter.as_ref().map(|i| i.domain().to_string()))
        .unwrap_or_else(|| config.domain.clone());
    let request = corvid::invites::InviteRequest {
        domain,
        inviter,
        username,
        roster,
        expiry: expiry_secs.map(std::time::Duration::from_secs),
    };
    let invite = corvid::invites::create_invite(&storage, &config, request)
        .await
        .map_err(|e| e.to_string())?;
    let domain = &invite.stored.domain;
    if config.registration_mode(domain) == corvid::config::RegistrationMode::Closed {
        // The link would only show "registration is closed": say so before it is handed out.
        eprintln!(
            "corvid: note: registration on {domain} is closed, so this invite cannot be used \
             until registration = \"invite\" (or \"open\") is set for it"
        );
    }
    // Written, not println!'d: a reader that stops early (`| head -n 1`) is not a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}\n{}", invite.url, invite.uri)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the invite: {e}"))
}

async fn import(storage: &Storage, config: &Config, iterations: u32) -> Result<(), String> {
    let (mut created, mut existing) = (0u64, 0u64);
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read standard input: {e}"))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(char::is_whitespace) else {
            return Err(format!("line {}: expected 'user password'", number + 1));
        };
        let account = account(user, config)?;
        let creds = credentials(password.trim(), iterations)?;
        match storage.accounts.create_account(&account, &creds).await {
            Ok(()) => created += 1,
            Err(StorageError::Conflict) => {
                existing += 1;
                eprintln!("{account} already exists; left as it is");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    println!("imported {created} accounts ({existing} already existed)");
    Ok(())
}

/// `alice` (on the main domain) or `alice@domain` (any hosted domain), as the bare JID that
/// keys the account, normalised as the server will see it at login.
fn account(input: &str, config: &Config) -> Result<String, String> {
    let full = if input.contains('@') {
        input.to_string()
    } else {
        format!("{input}@{}", config.domain)
    };
    let jid = corvid::address::parse(&full)
        .ok()
        .filter(|jid| jid.resource().is_none())
        .map(jid::Jid::into_bare)
        .ok_or_else(|| format!("'{input}' is not a valid user"))?;
    if jid.node().is_none() {
        return Err(format!("'{input}' has no user part"));
    }
    if !config.is_hosted(jid.domain().as_str()) {
        return Err(format!(
            "'{input}' is not on a domain this server hosts ({})",
            config
                .hosted_domains()
                .iter()
                .map(|h| h.domain.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(jid.to_string())
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("the password must not be empty".into());
    }
    Ok(password)
}

fn credentials(
    password: &str,
    iterations: u32,
) -> Result<Vec<corvid::storage::ScramCredentials>, String> {
    [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|hash| {
            corvid::sasl::derive_credentials(password, hash, iterations).map_err(|e| e.to_string())
        })
        .collect()
}
