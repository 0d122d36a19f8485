//! A real, throwaway PostgreSQL server for the tests of one test binary (one per process).
//!
//! The first test to ask for a database starts the server: a fresh data directory
//! (`initdb`), then `postgres` on a free localhost port, waited for until it accepts
//! connections. Every test then gets its own new database on it ([`fresh_database_url`]),
//! so tests are independent and run in parallel.
//!
//! PostgreSQL refuses to run as root, and the tests usually do (CI containers), so as root
//! the server runs as the `postgres` OS user (via `runuser`). A small `sh` watchdog, in
//! its own process group so a Ctrl-C of the test run does not kill it first, starts the
//! server and stays with it: when the test process is gone (however it ended; statics are
//! never dropped, so no destructor could do this), it shuts the server down and deletes
//! the data directory.
//!
//! The tests never skip: without PostgreSQL binaries they fail, naming scripts/test.sh,
//! which installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// OS user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";
/// Superuser role created by initdb (trust authentication: local, throwaway cluster).
const ROLE: &str = "chattr";
/// How long the server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The running server of this test binary.
struct Server {
    port: u16,
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }
}

/// A new, empty database on this binary's server (started on first use); returns its URL.
pub async fn fresh_database_url() -> String {
    static SERVER: OnceLock<Server> = OnceLock::new();
    // Blocking start inside an async test is fine: it happens once, and tests that call
    // concurrently simply wait for it.
    let server = SERVER.get_or_init(start);
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    // A connection per call: tests each run their own tokio runtime, and a connection
    // cannot outlive the runtime it was opened on.
    let mut admin = PgConnection::connect(&server.url("postgres")).await.expect("connect to test server");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    admin.close().await.expect("close admin connection");
    server.url(&name)
}

/// Directory of `initdb`/`postgres`/`pg_isready`: `$CHATTR_PG_BIN`, else the newest
/// Debian-packaged version.
fn bin_dir() -> PathBuf {
    let has_server = |dir: &Path| ["initdb", "postgres", "pg_isready"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("CHATTR_PG_BIN").map(PathBuf::from) {
        assert!(
            has_server(&dir),
            "CHATTR_PG_BIN={} has no initdb/postgres/pg_isready: point it at a PostgreSQL bin \
             directory, or unset it and run scripts/test.sh, which installs PostgreSQL",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/postgres): \
             run scripts/test.sh, which installs them, or set CHATTR_PG_BIN"
        ),
    }
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A command that runs `program` as the server's OS user (as ourselves unless root).
fn as_server_user(root: bool, program: &Path) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The watchdog: starts the server (the arguments after the first three), exits with 1
/// if the server dies on its own (leaving the directory for the log), and once the test
/// process is gone stops the server (SIGQUIT = immediate shutdown; nothing is kept) and
/// removes the directory.
const WATCHDOG: &str = r#"
test_pid=$1; data=$2; root=$3; shift 3
"$@" >"$root/postgres.log" 2>&1 &
server=$!
while kill -0 "$test_pid" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || exit 1
  sleep 0.5
done
pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then kill -QUIT "$pid" 2>/dev/null; else kill "$server" 2>/dev/null; fi
wait "$server"
rm -rf "$root"
"#;

fn start() -> Server {
    let bin = bin_dir();
    let root_user = running_as_root();
    let root = tempfile::Builder::new().prefix("chattr-pg-").tempdir().expect("temp dir").keep();
    let data = root.join("data");
    if root_user {
        let status = Command::new("chown").args([SERVER_USER, root.to_str().expect("utf-8 path")]).status();
        assert!(status.is_ok_and(|s| s.success()), "chown {} to {SERVER_USER}", root.display());
    }
    // ICU en-US as the database default collation, like a typical production server, so
    // the tests prove the schema does not depend on a bytewise default collation.
    let out = as_server_user(root_user, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", ROLE, "-E", "UTF8", "--locale=C.UTF-8"])
        .args(["--locale-provider=icu", "--icu-locale=en-US", "--no-sync", "--no-instructions"])
        .current_dir(&root)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let server = as_server_user(root_user, &bin.join("postgres"));
    let mut watchdog = Command::new("sh");
    watchdog
        .args(["-c", WATCHDOG, "sh", &std::process::id().to_string()])
        .arg(&data)
        .arg(&root)
        .arg(server.get_program())
        .args(server.get_args())
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        // The socket directory must be writable by the server user; keep it private.
        .arg("-k")
        .arg(&root)
        // fsync off ONLY because this cluster is thrown away: it makes commits cheap and
        // the tests fast, and a crash could corrupt it, which is irrelevant here.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        // Parallel tests each hold a pool of up to 16 connections.
        .args(["-c", "max_connections=400"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
    let mut watchdog = watchdog.spawn().expect("spawn postgres watchdog");
    wait_ready(&bin, port, &root, &mut watchdog);
    Server { port }
}

/// Polls `pg_isready` until the server accepts connections; fails with its log if it died
/// or did not come up in time.
fn wait_ready(bin: &Path, port: u16, root: &Path, watchdog: &mut Child) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", ROLE, "-d", "postgres"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        let died = watchdog.try_wait().ok().flatten().is_some();
        if died || Instant::now() > deadline {
            let log = std::fs::read_to_string(root.join("postgres.log")).unwrap_or_default();
            if died {
                let _ = std::fs::remove_dir_all(root);
            }
            panic!("test PostgreSQL on port {port} did not start (died: {died}); log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
