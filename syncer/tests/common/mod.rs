//! Test support: a PostgreSQL DSN (from `RINGMETRICS_DSN`, else a throwaway
//! cluster started once per test binary), unique table prefixes, and a
//! Python interpreter with Chancy for interop checks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

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
    let out = Command::new(python())
        .args(["-c", script])
        .env("DSN", dsn())
        .env("PREFIX", prefix)
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
