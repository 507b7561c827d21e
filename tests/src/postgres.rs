//! PostgreSQL 15 as a real server on loopback, for the PostgreSQL sidecar's
//! tests.
//!
//! The binaries are the ones `scripts/setup.sh` installs (Debian's
//! `postgresql-15`, with `postgresql-15-wal2json`), found through
//! `TRIBUTARY_PG_BIN` (set by `scripts/env.sh`). Each [`Postgres`] is its own
//! cluster: `initdb` into a fresh temp dir, `wal_level = logical`, trust
//! authentication, listening on `127.0.0.1` on a free port with its unix
//! socket in the temp dir, and `postgres` started directly (no
//! `pg_ctlcluster`, no distribution cluster). Any number run at once, so two
//! of them are two regions.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb`,
//! `postgres` and `pg_ctl` run as the `postgres` system user (created by the
//! `postgresql-common` package) through util-linux's `setpriv`, and the temp
//! dir (under `/tmp`, which that user can traverse) is handed to it; as any
//! other user they run as that user.
//!
//! Dropping a [`Postgres`] stops it with a fast shutdown and waits for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::free_port;

/// How long a server may take to accept its first connection.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a shutdown may take before the server is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two polls of a state being waited on.
const POLL: Duration = Duration::from_millis(50);

/// The database superuser every server is initialised with.
pub const SUPERUSER: &str = "postgres";

/// The system user the server runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// Settings appended to `postgresql.conf` besides the port and socket dir.
/// `fsync = off` only weakens durability against an OS crash; a killed
/// server still recovers everything it committed. `autovacuum = off`: its
/// ANALYZE transactions write `pg_statistic` and would show up in slots as
/// empty `B`/`C` pairs at random moments (a test that wants them runs
/// `ANALYZE`).
const SETTINGS: &str = "\
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
listen_addresses = '127.0.0.1'
max_connections = 40
shared_buffers = 16MB
fsync = off
autovacuum = off
timezone = 'UTC'
";

/// A running PostgreSQL 15 server on `127.0.0.1`; stopped on drop.
pub struct Postgres {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    run_as: Option<SystemUser>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The unprivileged account a root test process runs the server as.
#[derive(Clone)]
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl Postgres {
    /// Initialises a cluster in a new temp dir, starts `postgres` on a free
    /// loopback port and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Postgres> {
        let run_as = system_user()?;
        // The server's user must reach its data dir: /tmp is world
        // traversable, a TMPDIR of root's need not be.
        let dir = match run_as {
            Some(_) => tempfile::Builder::new()
                .prefix("tributary-pg-")
                .tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("tributary-pg-").tempdir(),
        }
        .context("create the server's temp dir")?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .with_context(|| format!("hand {} to user {}", dir.path().display(), user.name))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");

        let out = run(as_user(&run_as, &tool("initdb")?)
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync"])
            .current_dir(dir.path()))
        .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed with {}: {}", out.status, output_text(&out));
        }
        let conf = data.join("postgresql.conf");
        let mut settings =
            std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
        settings.push_str(SETTINGS);
        settings.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        let mut pg = Postgres {
            port: 0,
            data,
            log,
            run_as,
            child: None,
            _dir: dir,
        };
        // A free port can be taken by another test's server between the
        // probe and the bind: then this server exits, and another port is
        // tried (the file's last `port` line wins).
        for attempt in 1.. {
            pg.port = free_port();
            settings.push_str(&format!("port = {}\n", pg.port));
            std::fs::write(&conf, &settings)
                .with_context(|| format!("write {}", conf.display()))?;
            match pg.spawn() {
                Ok(()) => break,
                Err(e) if attempt < 5 && pg.log().contains("could not bind") => {
                    eprintln!(
                        "postgres: port {} was taken ({e:#}); trying another",
                        pg.port
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pg)
    }

    /// The TCP port it listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq/tokio-postgres connection string for database `db` as the
    /// superuser.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={db}",
            self.port
        )
    }

    /// Creates database `name` (an identifier: letters, digits, `_`).
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?} is not a plain identifier");
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(drop)
            .with_context(|| format!("create database {name}"))
    }

    /// Runs `sql` in database `db` with `psql` (unaligned, tuples only) and
    /// returns its standard output; `Err` with psql's messages if it fails.
    /// For set-up from synchronous code; tests talk through [`connect`].
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = run(Command::new(tool("psql")?)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("{} connect_timeout=5", self.dsn(db)))
            .arg("-c")
            .arg(sql))?;
        if !out.status.success() {
            bail!("psql failed with {}: {}", out.status, output_text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last 40 lines of its log (the server's stderr), for failure
    /// messages and for warnings the server only logs.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint, every backend killed), starts it again on the
    /// same port and data dir, and waits until it has recovered and accepts
    /// connections. Sessions to the old server are gone.
    pub fn restart_immediate(&mut self) -> anyhow::Result<()> {
        self.stop("immediate")?;
        self.spawn()
    }

    /// Spawns `postgres` on the prepared data dir and waits until it
    /// accepts connections.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("open the server's log file")?;
        let err = out.try_clone().context("duplicate the server's log file")?;
        let postgres = tool("postgres")?;
        let child = as_user(&self.run_as, &postgres)
            .arg("-D")
            .arg(&self.data)
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {}", postgres.display()))?;
        self.child = Some(child);
        self.wait_accepting()
    }

    /// Polls `SELECT 1` until it succeeds, the server exits or
    /// [`START_DEADLINE`] passes.
    fn wait_accepting(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + START_DEADLINE;
        let mut last = String::from("(never probed)");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("poll the server's process")?
            {
                self.child = None;
                bail!(
                    "postgres exited with {status} before accepting connections; last probe: \
                     {last}\n--- log ---\n{}",
                    self.log_tail()
                );
            }
            // The port may answer for another test's server (this one then
            // fails to bind it and exits): only its own data dir counts.
            match self.psql("postgres", "SHOW data_directory") {
                Ok(dir) if same_dir(Path::new(dir.trim()), &self.data) => return Ok(()),
                Ok(dir) => last = format!("port {} is served from {}", self.port, dir.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= end {
                bail!(
                    "postgres on port {} did not accept connections within {START_DEADLINE:?}; \
                     last probe: {last}\n--- log ---\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the server with `pg_ctl stop -m MODE` (which waits) and reaps
    /// it; kills it if that fails or it is still there after
    /// [`STOP_DEADLINE`].
    fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let stopped = tool("pg_ctl").and_then(|pg_ctl| {
            run(as_user(&self.run_as, &pg_ctl)
                .arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t"])
                .arg(STOP_DEADLINE.as_secs().to_string())
                .current_dir(&self.data))
        });
        let end = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().context("poll the server's process")? {
                return match stopped {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => bail!(
                        "pg_ctl stop -m {mode} failed ({}), yet the server exited with {status}: {}",
                        out.status,
                        output_text(&out)
                    ),
                    Err(e) => Err(e.context(format!("server exited with {status}"))),
                };
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "postgres did not stop (-m {mode}) within {STOP_DEADLINE:?}: killed; \
                     pg_ctl: {}\n--- log ---\n{}",
                    match &stopped {
                        Ok(out) => output_text(out),
                        Err(e) => format!("{e:#}"),
                    },
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop("fast") {
            eprintln!("stopping postgres on port {}: {e:#}", self.port);
        }
    }
}

/// Connects to `dsn` (no TLS) and spawns the connection's task on the
/// current tokio runtime; the task ends when the client is dropped or the
/// server goes away.
pub async fn connect(dsn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {dsn}"))?;
    tokio::spawn(async move {
        // A connection that ends in an error is reported by the next call
        // on its client; nothing to handle here.
        let _ = connection.await;
    });
    Ok(client)
}

/// The path of PostgreSQL tool `name` (`initdb`, `postgres`, `psql`,
/// `pg_recvlogical`, ...) in `TRIBUTARY_PG_BIN`.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("TRIBUTARY_PG_BIN")
        .map(PathBuf::from)
        .context(
            "TRIBUTARY_PG_BIN is not set: run `scripts/setup.sh` to install PostgreSQL 15, \
         then `source scripts/env.sh`",
        )?;
    let path = bin.join(name);
    if !path.exists() {
        bail!(
            "{} does not exist: run `scripts/setup.sh` to install PostgreSQL 15",
            path.display()
        );
    }
    Ok(path)
}

/// `Some` (the `postgres` account) when this process runs as root, `None`
/// otherwise.
fn system_user() -> anyhow::Result<Option<SystemUser>> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let uid = id(&["-u", SYSTEM_USER]).with_context(|| {
        format!(
            "running as root, the server runs as system user {SYSTEM_USER}, which does not \
             exist: run `scripts/setup.sh` (the postgresql-15 package creates it)"
        )
    })?;
    let gid = id(&["-g", SYSTEM_USER])?;
    Ok(Some(SystemUser {
        name: SYSTEM_USER.to_owned(),
        uid,
        gid,
    }))
}

/// The number `id ARGS` prints.
fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = run(Command::new("id").args(args))?;
    if !out.status.success() {
        bail!("id {} failed: {}", args.join(" "), output_text(&out));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("parse the output of id {}: {text:?}", args.join(" ")))
}

/// A command running `program`, through `setpriv` as `user` if there is
/// one.
fn as_user(user: &Option<SystemUser>, program: &Path) -> Command {
    match user {
        None => Command::new(program),
        Some(user) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            cmd
        }
    }
}

/// Runs `cmd` to completion, capturing its output.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))
}

/// A command's stderr and stdout, trimmed, for error messages.
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// Whether two paths name the same directory (symbolic links resolved).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
