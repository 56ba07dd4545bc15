//! Test support: a PostgreSQL DSN (from `RINGMETRICS_DSN`, else a throwaway
//! cluster started once per test binary), unique table prefixes, and a
//! Python interpreter with Chancy for interop checks.
#![allow(dead_code)]

pub mod small;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use postgres::{Client, NoTls};

static DSN: OnceLock<String> = OnceLock::new();
static THROWAWAY: OnceLock<PathBuf> = OnceLock::new();

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

extern "C" fn stop_throwaway() {
    if let Some(dir) = THROWAWAY.get() {
        let _ = Command::new(root().join("scripts/pg-throwaway.sh"))
            .arg("stop")
            .arg(dir)
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The DSN every test uses.
pub fn dsn() -> String {
    DSN.get_or_init(|| {
        if let Ok(dsn) = std::env::var("RINGMETRICS_DSN") {
            return dsn;
        }
        let dir = std::env::temp_dir().join(format!("ringmetrics-syncer-test-{}", std::process::id()));
        let out = Command::new(root().join("scripts/pg-throwaway.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/pg-throwaway.sh");
        assert!(
            out.status.success(),
            "throwaway PostgreSQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        THROWAWAY.set(dir).unwrap();
        // SAFETY: registers a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(stop_throwaway) };
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
    .clone()
}

pub fn client() -> Client {
    Client::connect(&dsn(), NoTls).expect("connect to the test database")
}

/// A table prefix no other test uses; its tables are dropped by `Cleanup`.
pub fn prefix(name: &str) -> Prefix {
    static N: AtomicU32 = AtomicU32::new(0);
    let p = format!(
        "t{}_{}_{}_",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    );
    Prefix(p)
}

pub struct Prefix(pub String);

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&dsn(), NoTls) {
            let rows = c
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, $1)",
                    &[&self.0],
                )
                .unwrap_or_default();
            for r in rows {
                let t: String = r.get(0);
                let _ = c.batch_execute(&format!("DROP TABLE IF EXISTS \"{t}\" CASCADE"));
            }
        }
    }
}

/// A Python with Chancy installed: `RINGMETRICS_PYTHON`, else the project
/// venv. Fails (never skips) if Chancy can't be imported.
pub fn python() -> String {
    let candidates = [
        std::env::var("RINGMETRICS_PYTHON").ok(),
        Some(root().join(".venv/bin/python").to_string_lossy().into_owned()),
        Some("python3".into()),
    ];
    for p in candidates.into_iter().flatten() {
        if Command::new(&p)
            .args(["-c", "import chancy"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return p;
        }
    }
    panic!("no Python with chancy found: run scripts/setup-python.sh or set RINGMETRICS_PYTHON");
}

/// Run a Python script with `DSN` and `PREFIX` in its environment; returns
/// stdout, panics with stderr on failure.
pub fn run_python(script: &str, prefix: &str) -> String {
    run_python_env(script, prefix, &[])
}

/// [`run_python`] with more environment variables.
pub fn run_python_env(script: &str, prefix: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(python())
        .args(["-c", script])
        .env("DSN", dsn())
        .env("PREFIX", prefix)
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP proxy in front of the test server that, when armed, forwards a
/// `COMMIT` to the server and then cuts the client's connection before the
/// server's answer reaches it: the commit happens, the client can't know.
pub struct CommitCutter {
    /// A DSN that goes through the proxy.
    pub dsn: String,
    armed: Arc<AtomicU32>,
    fired: Arc<AtomicU32>,
}

impl CommitCutter {
    /// Cut the connection after the next `n` COMMITs.
    pub fn arm(&self, n: u32) {
        self.armed.store(n, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn fired(&self) -> u32 {
        self.fired.load(Ordering::SeqCst)
    }
}

pub fn commit_cutter() -> CommitCutter {
    let upstream: postgres::Config = dsn().parse().unwrap();
    let host = match &upstream.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".into(),
    };
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // sslmode=disable: the proxy reads the server's messages, so no TLS.
    let mut proxied = format!(
        "host=127.0.0.1 port={} user={} dbname={} sslmode=disable",
        listener.local_addr().unwrap().port(),
        upstream.get_user().unwrap_or("postgres"),
        upstream.get_dbname().unwrap_or("postgres")
    );
    if let Some(p) = upstream.get_password() {
        proxied.push_str(&format!(" password={}", String::from_utf8_lossy(p)));
    }
    let armed = Arc::new(AtomicU32::new(0));
    let fired = Arc::new(AtomicU32::new(0));
    let (a, f) = (armed.clone(), fired.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect((host.as_str(), port)) else {
                continue;
            };
            let cut = Arc::new(AtomicBool::new(false));
            let (c2, s2, cut2, f2) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                cut.clone(),
                f.clone(),
            );
            // Server to client, message by message (NoTls sends no SSL
            // request, so every server message is framed): once a cut COMMIT
            // was sent, swallow its CommandComplete (sent only after the
            // commit is durable and visible) and hang up on the client.
            std::thread::spawn(move || {
                let (mut from, mut to) = (s2, c2);
                loop {
                    let mut head = [0u8; 5];
                    if from.read_exact(&mut head).is_err() {
                        break;
                    }
                    let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
                    let mut body = vec![0u8; len.saturating_sub(4)];
                    if from.read_exact(&mut body).is_err() {
                        break;
                    }
                    if cut2.load(Ordering::SeqCst) && head[0] == b'C' && body.starts_with(b"COMMIT") {
                        f2.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if to.write_all(&head).is_err() || to.write_all(&body).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            });
            let a = a.clone();
            // Client to server, message by message.
            std::thread::spawn(move || {
                let (mut from, mut to) = (client, server);
                let mut startup = true;
                loop {
                    let mut head = vec![0u8; if startup { 4 } else { 5 }];
                    if from.read_exact(&mut head).is_err() {
                        break;
                    }
                    let len_at = head.len() - 4;
                    let len = u32::from_be_bytes(head[len_at..].try_into().unwrap()) as usize;
                    let mut body = vec![0u8; len.saturating_sub(4)];
                    if from.read_exact(&mut body).is_err() {
                        break;
                    }
                    if startup {
                        // SSL / GSS requests come before the real startup.
                        let code = body.get(..4).map(|c| u32::from_be_bytes(c.try_into().unwrap()));
                        startup = matches!(code, Some(80877103 | 80877104));
                    } else if head[0] == b'Q'
                        && body.len() >= 6
                        && body[..6].eq_ignore_ascii_case(b"COMMIT")
                        && a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        cut.store(true, Ordering::SeqCst);
                    }
                    if to.write_all(&head).is_err() || to.write_all(&body).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            });
        }
    });
    CommitCutter {
        dsn: proxied,
        armed,
        fired,
    }
}

/// A syncer on the test database that only flushes when asked.
pub fn syncer(
    agg: &std::sync::Arc<ringmetrics::Aggregator>,
    prefix: &str,
    worker: &str,
) -> ringmetrics_postgres::Syncer {
    let config = ringmetrics_postgres::SyncerConfig {
        prefix: prefix.into(),
        worker_id: worker.into(),
        interval: std::time::Duration::from_secs(3600),
        ..ringmetrics_postgres::SyncerConfig::new(dsn())
    };
    ringmetrics_postgres::Syncer::start(agg.clone(), config).unwrap()
}

/// Every day bucket from yesterday to tomorrow: what anything recorded now
/// is read back from.
pub fn around_today(worker_id: Option<String>) -> ringmetrics_postgres::ReadQuery {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    ringmetrics_postgres::ReadQuery {
        prefix: Some(String::new()),
        worker_id,
        resolution: ringmetrics::Resolution::Day1,
        start_secs: (now / 86400 - 1) * 86400,
        end_secs: (now / 86400 + 1) * 86400,
    }
}

/// A TCP proxy in front of the test server that can be taken down: while
/// down it closes every connection at once (and cuts open ones).
pub struct Outage {
    /// A DSN that goes through the proxy.
    pub dsn: String,
    down: Arc<AtomicBool>,
}

impl Outage {
    pub fn start() -> Outage {
        let upstream: postgres::Config = dsn().parse().unwrap();
        let port = upstream.get_ports().first().copied().unwrap_or(5432);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dsn = format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=disable connect_timeout=5",
            listener.local_addr().unwrap().port(),
            upstream.get_user().unwrap_or("postgres"),
            upstream.get_dbname().unwrap_or("postgres")
        );
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let d = d.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(n) if n > 0 && !d.load(Ordering::SeqCst) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                _ => break,
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Outage { dsn, down }
    }

    /// Take the database away (`true`) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}
