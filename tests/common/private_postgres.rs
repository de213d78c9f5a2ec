//! A PostgreSQL server of the test's own, in a temporary directory on a free loopback port,
//! that the test may stop and start again (the shared instance other tests use is never
//! touched). `initdb` refuses to run as root, so when the tests run as root every command
//! runs as the `postgres` system user.

use std::path::{Path, PathBuf};

use tokio::process::Command;

pub struct PrivatePostgres {
    /// Data directory and Unix socket live here; removed on drop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

/// Where the server binaries may be: `/usr/local/bin`, then the Debian layout.
fn find_bin() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let local = PathBuf::from("/usr/local/bin");
    if has_both(&local) {
        return Some(local);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|dir| has_both(dir))
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivatePostgres {
    /// Initialises and starts a fresh cluster. When the binaries are missing: panics if
    /// `CORVID_TEST_POSTGRES` is set (CI, where PostgreSQL must be tested), otherwise prints
    /// why and returns `None` so the test can skip.
    pub async fn start() -> Option<PrivatePostgres> {
        let Some(bin) = find_bin() else {
            let why = "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/local/bin or \
                       /usr/lib/postgresql/*/bin";
            if std::env::var_os("CORVID_TEST_POSTGRES").is_some() {
                panic!("CORVID_TEST_POSTGRES is set but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .await
                .expect("chown runs");
            assert!(status.success(), "chown of the data directory to postgres");
        }
        let mut pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
            running: false,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .await;
        pg.restart().await;
        Some(pg)
    }

    /// `postgres://` URL of the cluster's default database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): sessions are cut, nothing is
    /// flushed, as when the database host dies.
    pub async fn stop(&mut self) {
        let data = self.data();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"])
            .await;
        self.running = false;
    }

    /// Starts the server (again) on the same port and data.
    pub async fn restart(&mut self) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log").display().to_string();
        // fsync off: an immediate stop kills the processes, not the machine, so what they
        // wrote is still in the page cache. `synchronous_commit` stays on: without it a
        // commit is acknowledged before its WAL is written, and an immediate stop loses it.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options,
            ],
        )
        .await;
        self.running = true;
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{} does not run: {e}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Drop cannot await: the blocking stop is brief (an immediate shutdown).
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let _ = command
            .args(["stop", "-D", &data, "-m", "immediate", "-w"])
            .output();
    }
}
