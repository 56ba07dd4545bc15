//! Connecting like libpq, against real servers started here: a throwaway
//! TLS cluster (test CA, server certificate for `localhost` only, SCRAM
//! user with a password full of separators), a PgBouncer in transaction
//! mode in front of it, a silent TCP listener, and a lock held by another
//! session. Every error path is checked for the password.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use ringmetrics::{Aggregator, Config, Resolution};
use ringmetrics_postgres::{Connector, ReadQuery, SyncError, Syncer, SyncerConfig, Timeouts, cleanup, read_metrics};

const WAIT: Duration = Duration::from_secs(30);
/// The SCRAM user's password (scripts/pg-tls.sh).
const PW: &str = "pw with spaces:@/?";

struct Servers {
    dir: PathBuf,
    port: u16,
    bouncer: OnceLock<u16>,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();

extern "C" fn stop_servers() {
    if let Some(s) = SERVERS.get() {
        let root = common::root();
        let _ = Command::new(root.join("scripts/pgbouncer.sh"))
            .arg("stop")
            .arg(s.dir.join("bouncer"))
            .status();
        let _ = Command::new(root.join("scripts/pg-tls.sh"))
            .arg("stop")
            .arg(&s.dir)
            .status();
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringmetrics-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(common::root().join("scripts/pg-tls.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/pg-tls.sh");
        assert!(
            out.status.success(),
            "TLS cluster failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: registers a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(stop_servers) };
        let port = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
        Servers {
            dir,
            port,
            bouncer: OnceLock::new(),
        }
    })
}

fn ca() -> String {
    servers().dir.join("ca.crt").display().to_string()
}

fn other_ca() -> String {
    servers().dir.join("other-ca.crt").display().to_string()
}

/// A DSN for the TLS cluster; `extra` is appended.
fn tls_dsn(host: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user=postgres dbname=postgres {extra}",
        servers().port
    )
}

fn superuser() -> Client {
    Client::connect(&tls_dsn("127.0.0.1", "sslmode=disable"), NoTls).unwrap()
}

/// A unique application name, to find the syncer's own backend.
fn app() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rm-connect-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn agg() -> Arc<Aggregator> {
    let a = Arc::new(Aggregator::new(Config::default().persisted()).unwrap());
    a.increment_counter("jobs:done", 3.0).unwrap();
    a
}

fn start(dsn: &str, prefix: &str) -> Result<Syncer, SyncError> {
    Syncer::start(
        agg(),
        SyncerConfig {
            prefix: prefix.into(),
            worker_id: "w".into(),
            interval: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            // Keep the connection after a flush, so pg_stat_ssl shows it.
            hold_connection: true,
            ..SyncerConfig::new(dsn)
        },
    )
}

/// Is the backend whose application name is `app` using TLS?
fn encrypted(app: &str) -> bool {
    superuser()
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0)
}

/// Saves a counter with `dsn` (through the syncer), returns whether its
/// connection was encrypted.
fn saves(dsn: &str) -> bool {
    let app = app();
    let prefix = format!("{}_", app.replace('-', "_"));
    let with_app = if dsn.starts_with("postgresql://") {
        format!(
            "{dsn}{}application_name={app}",
            if dsn.contains('?') { '&' } else { '?' }
        )
    } else {
        format!("{dsn} application_name={app}")
    };
    let s = start(&with_app, &prefix).unwrap();
    let report = s.flush(WAIT).unwrap_or_else(|e| panic!("{dsn}: {e}"));
    assert_eq!(report.rows_written, 4, "{dsn}");
    let tls = encrypted(&app);
    let total: f64 = superuser()
        .query_one(
            &format!(
                "SELECT sum(t) FROM \"{prefix}metrics\" m CROSS JOIN LATERAL unnest(m.totals) t WHERE resolution = 60"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, 3.0, "{dsn}");
    s.stop(WAIT).unwrap();
    tls
}

fn fails(dsn: &str) -> String {
    let s = match start(dsn, "never_") {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let e = s.flush(WAIT).expect_err(dsn).to_string();
    assert_eq!(s.status().last_error.as_deref(), Some(e.as_str()));
    drop(s);
    e
}

#[test]
fn every_sslmode_saves_and_encrypts_as_libpq_does() {
    let ca = ca();
    assert!(saves(&tls_dsn("127.0.0.1", "sslmode=require")));
    assert!(saves(&tls_dsn(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={ca}")
    )));
    assert!(saves(&tls_dsn(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={ca}")
    )));
    // hostaddr: connect to the address, check the certificate for the name.
    assert!(saves(&tls_dsn(
        "localhost",
        &format!("hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={ca}")
    )));
    // libpq's default is prefer: encrypted when the server offers it.
    assert!(saves(&tls_dsn("127.0.0.1", "")));
    assert!(saves(&tls_dsn("127.0.0.1", "sslmode=prefer")));
    assert!(!saves(&tls_dsn("127.0.0.1", "sslmode=disable")));
    // allow tries plain first.
    assert!(!saves(&tls_dsn("127.0.0.1", "sslmode=allow")));
    // URI form, and channel binding over TLS with SCRAM.
    let port = servers().port;
    assert!(saves(&format!(
        "postgresql://rm_scram:{}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}&channel_binding=require",
        "pw%20with%20spaces%3A%40%2F%3F"
    )));
}

#[test]
fn verification_fails_closed() {
    let (ca, other) = (ca(), other_ca());
    // The certificate names localhost, not 127.0.0.1.
    let e = fails(&tls_dsn("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}")));
    assert!(e.contains("certificate") && e.contains("not valid for name"), "{e}");
    // Signed by another CA.
    let e = fails(&tls_dsn("localhost", &format!("sslmode=verify-ca sslrootcert={other}")));
    assert!(e.contains("certificate"), "{e}");
    // require with a root file verifies the chain, as libpq does.
    let e = fails(&tls_dsn("localhost", &format!("sslmode=require sslrootcert={other}")));
    assert!(e.contains("certificate"), "{e}");
    // verify-ca without a root file is a configuration error.
    let e = fails(&tls_dsn(
        "localhost",
        "sslmode=verify-ca sslrootcert=/nonexistent/root.crt",
    ));
    assert!(e.contains("does not exist"), "{e}");
    // Encryption required, server allows only plain for this user.
    let e = fails(&format!(
        "host=127.0.0.1 port={} user=rm_nossl dbname=postgres sslmode=require",
        servers().port
    ));
    assert!(e.contains("28000"), "{e}");
}

#[test]
fn allow_and_prefer_fall_back_like_libpq() {
    let port = servers().port;
    // Only plain is accepted for rm_nossl: prefer's TLS attempt is refused,
    // then plain succeeds.
    assert!(!saves(&format!(
        "host=127.0.0.1 port={port} user=rm_nossl dbname=postgres sslmode=prefer"
    )));
    // Only TLS for rm_sslonly: allow's plain attempt is refused, then TLS.
    assert!(saves(&format!(
        "host=127.0.0.1 port={port} user=rm_sslonly dbname=postgres sslmode=allow"
    )));
    let e = fails(&format!(
        "host=127.0.0.1 port={port} user=rm_sslonly dbname=postgres sslmode=disable"
    ));
    assert!(e.contains("28000"), "{e}");
}

#[test]
fn passwords_in_every_form_authenticate() {
    let port = servers().port;
    let dir = servers().dir.join(format!("pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passfile = dir.join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{port}:postgres:rm_scram:{}\n", PW.replace(':', "\\:")),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for dsn in [
        format!("host=127.0.0.1 port={port} user=rm_scram dbname=postgres password='{PW}'"),
        format!("host=127.0.0.1 port={port} user=rm_scram dbname=postgres password = 'pw\\ with spaces:@/?'"),
        format!("host=127.0.0.1 port={port} user=rm_scram dbname=postgres password=pw\\ with\\ spaces:@/?"),
        format!("postgresql://rm_scram:pw%20with%20spaces%3A%40%2F%3F@127.0.0.1:{port}/postgres"),
        format!("postgresql://rm_scram@127.0.0.1:{port}/postgres?password=pw%20with%20spaces%3A%40%2F%3F"),
        format!(
            "host=127.0.0.1 port={port} user=rm_scram dbname=postgres passfile={}",
            passfile.display()
        ),
    ] {
        assert!(saves(&dsn), "{dsn}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Client certificates (`cert` authentication), with a plain key and an
/// encrypted PKCS#8 key and its `sslpassword`.
#[test]
fn client_certificates_and_encrypted_keys() {
    use std::os::unix::fs::PermissionsExt;
    let s = servers();
    // Copies owned by this user, as libpq requires of a key file.
    let dir = s.dir.join(format!("client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["client.crt", "client.key", "client-enc.key"] {
        std::fs::copy(s.dir.join(f), dir.join(f)).unwrap();
    }
    for f in ["client.key", "client-enc.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (crt, key, enc) = (
        dir.join("client.crt"),
        dir.join("client.key"),
        dir.join("client-enc.key"),
    );
    let base = format!(
        "host=localhost port={} user=rm_cert dbname=postgres sslmode=verify-full sslrootcert={}",
        s.port,
        ca()
    );
    assert!(saves(&format!(
        "{base} sslcert={} sslkey={}",
        crt.display(),
        key.display()
    )));
    assert!(saves(&format!(
        "{base} sslcert={} sslkey={} sslpassword='key pass'",
        crt.display(),
        enc.display()
    )));
    let e = fails(&format!(
        "{base} sslcert={} sslkey={} sslpassword='bad secret'",
        crt.display(),
        enc.display()
    ));
    assert!(e.contains("cannot decrypt") && !e.contains("bad secret"), "{e}");
    let e = fails(&format!("{base} sslcert={} sslkey={}", crt.display(), enc.display()));
    assert!(e.contains("sslpassword"), "{e}");
    // No certificate: the server refuses.
    let e = fails(&format!("{base} sslcert={}", dir.join("missing.crt").display()));
    assert!(e.contains("28000"), "{e}");
    // A key others can read is refused, as libpq refuses it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = fails(&format!("{base} sslcert={} sslkey={}", crt.display(), key.display()));
    assert!(e.contains("group or world access"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Certificate revocation lists: sslcrl and sslcrldir.
#[test]
fn revocation_lists_are_checked() {
    let d = &servers().dir;
    let base = tls_dsn("localhost", &format!("sslmode=verify-full sslrootcert={}", ca()));
    assert!(saves(&format!("{base} sslcrl={}", d.join("empty.crl").display())));
    let e = fails(&format!("{base} sslcrl={}", d.join("revoked.crl").display()));
    assert!(e.contains("Revoked"), "{e}");
    let e = fails(&format!("{base} sslcrldir={}", d.join("crldir").display()));
    assert!(e.contains("Revoked"), "{e}");
}

/// Several hosts: the first that accepts wins, in order; a single port
/// applies to every host.
#[test]
fn multiple_hosts_are_tried_in_order() {
    let port = servers().port;
    assert!(!saves(&format!(
        "host=127.0.0.1,127.0.0.1 port=1,{port} user=postgres dbname=postgres sslmode=disable connect_timeout=2"
    )));
    assert!(saves(&format!(
        "postgresql://127.0.0.1:1,localhost:{port}/postgres?user=postgres&target_session_attrs=read-write&sslmode=verify-full&sslrootcert={}",
        ca()
    )));
    let e = fails("host=127.0.0.1,127.0.0.1 port=1,2 user=postgres connect_timeout=2");
    assert!(e.contains("127.0.0.1:1") && e.contains("127.0.0.1:2"), "{e}");
}

/// Every way to get an error, with the password in every DSN form: no
/// message, status, or Debug output shows it.
#[test]
fn no_error_path_shows_a_password() {
    let port = servers().port;
    let ca = ca();
    let secret = "hunter2 secret";
    let forms = |host: &str, port: u16, extra: &str| {
        vec![
            format!("host={host} port={port} user=rm_scram dbname=postgres password='{secret}' {extra}"),
            format!("host={host} port={port} user=rm_scram dbname=postgres password = 'hunter2\\ secret' {extra}"),
            format!(
                "postgresql://rm_scram:hunter2%20secret@{host}:{port}/postgres?{}",
                extra.replace(' ', "&")
            ),
            format!(
                "postgresql://rm_scram@{host}:{port}/postgres?password=hunter2%20secret&{}",
                extra.replace(' ', "&")
            ),
        ]
    };
    let check = |what: &str, dsn: &str, e: &str| {
        for piece in ["hunter2", "secret", "hunter2%20secret"] {
            assert!(!e.contains(piece), "{what}: {dsn} gave: {e}");
        }
    };
    let mut cases = Vec::new();
    // Authentication failure (a wrong password: the given one must not show).
    cases.extend(
        forms("127.0.0.1", port, "sslmode=disable")
            .into_iter()
            .map(|d| ("auth", d)),
    );
    // Refused connection.
    cases.extend(
        forms("127.0.0.1", 1, "connect_timeout=2")
            .into_iter()
            .map(|d| ("refused", d)),
    );
    // TLS failure.
    cases.extend(
        forms("127.0.0.1", port, &format!("sslmode=verify-full sslrootcert={ca}"))
            .into_iter()
            .map(|d| ("tls", d)),
    );
    // Bad DSNs: unknown keyword, unquoted password with a space, bad
    // percent-encoding, bad value, unsupported keyword.
    for d in [
        format!("host=x password={secret} bogus=1"),
        format!("host=x password={secret}"),
        "postgresql://u:hunter2%zzsecret@h/db".to_owned(),
        "postgresql://u:hunter2@h/db?bogus=secret".to_owned(),
        format!("host=x password='{secret}' sslmode=bogus"),
        format!("host=x password='{secret}' requirepeer=secret"),
        format!("host=x password='{secret}"),
        "hunter2 secret".to_owned(),
    ] {
        cases.push(("bad dsn", d));
    }
    for (what, dsn) in &cases {
        let config = SyncerConfig::new(dsn.clone());
        check(what, dsn, &format!("{config:?}"));
        match Syncer::start(
            agg(),
            SyncerConfig {
                connect_timeout: Duration::from_secs(3),
                ..config
            },
        ) {
            Err(e) => {
                check(what, dsn, &e.to_string());
                check(what, dsn, &format!("{e:?}"));
            }
            Ok(s) => {
                let e = s.flush(WAIT).expect_err(dsn);
                check(what, dsn, &e.to_string());
                check(what, dsn, &format!("{e:?}"));
                check(what, dsn, &s.status().last_error.unwrap());
                check(what, dsn, &format!("{s:?}"));
            }
        }
        let q = ReadQuery {
            prefix: None,
            worker_id: None,
            resolution: Resolution::Min1,
            start_secs: 0,
            end_secs: 60,
        };
        if let Err(e) = read_metrics(dsn, "chancy_", &q) {
            check(what, dsn, &e.to_string());
        }
        if let Err(e) = cleanup(dsn, "chancy_", [1, 1, 1, 1]) {
            check(what, dsn, &e.to_string());
        }
        if let Ok(c) = Connector::new(dsn, Timeouts::default()) {
            check(what, dsn, &format!("{c:?}"));
        }
    }
}

/// A server that accepts and never answers: every call returns within
/// the connect timeout.
#[test]
fn silent_server_fails_within_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    // Retries wait on the stalled attempt instead of opening (and
    // abandoning) a connection each time.
    let s = Syncer::start(
        agg(),
        SyncerConfig {
            connect_timeout: Duration::from_secs(2),
            interval: Duration::from_secs(3600),
            ..SyncerConfig::new(format!("host=127.0.0.1 port={port} user=postgres sslmode=disable"))
        },
    )
    .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        s.flush(WAIT).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }
    assert_eq!(held.lock().unwrap().len(), 1, "one connection for three flushes");
    drop(s);
    for mode in ["disable", "prefer", "require"] {
        let dsn = format!("host=127.0.0.1 port={port} user=postgres sslmode={mode}");
        let s = Syncer::start(
            agg(),
            SyncerConfig {
                connect_timeout: Duration::from_secs(2),
                interval: Duration::from_secs(3600),
                ..SyncerConfig::new(dsn.clone())
            },
        )
        .unwrap();
        let t = Instant::now();
        let e = s.flush(WAIT).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(4), "{mode}: {:?}", t.elapsed());
        assert!(
            e.to_string().contains("did not complete the connection within 2s"),
            "{e}"
        );
        // The DSN's connect_timeout wins over the configuration's.
        let t = Instant::now();
        let q = ReadQuery {
            prefix: None,
            worker_id: None,
            resolution: Resolution::Min1,
            start_secs: 0,
            end_secs: 60,
        };
        read_metrics(&format!("{dsn} connect_timeout=2"), "chancy_", &q).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(4), "{mode}: {:?}", t.elapsed());
        let t = Instant::now();
        drop(s);
        assert!(t.elapsed() < Duration::from_secs(4), "drop: {:?}", t.elapsed());
    }
}

/// Another session holds locks the syncer's statements need: each fails
/// within lock_timeout instead of waiting.
#[test]
fn blocked_locks_fail_within_lock_timeout() {
    let p = common::prefix("locked");
    let dsn = common::dsn();
    let s = common::syncer(&agg(), &p, "w");
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
    let mut holder = common::client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE \"{p}metrics\", \"{p}metric_definitions\" IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('ringmetrics.schema:' || $1::text))",
        &[&p.0],
    )
    .unwrap();
    // A fresh syncer checks the schema under the advisory lock first.
    let s = Syncer::start(
        agg(),
        SyncerConfig {
            prefix: p.0.clone(),
            interval: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(1),
            ..SyncerConfig::new(dsn.clone())
        },
    )
    .unwrap();
    let t = Instant::now();
    let e = s.flush(WAIT).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.to_string().contains("55P03"), "{e}");
    drop(s);
    // Reads and cleanup (default lock_timeout 10 s) wait at most that.
    let q = ReadQuery {
        prefix: None,
        worker_id: None,
        resolution: Resolution::Min1,
        start_secs: 0,
        end_secs: 60,
    };
    let t = Instant::now();
    let e = read_metrics(&dsn, &p, &q).unwrap_err();
    assert!(
        e.to_string().contains("55P03") && t.elapsed() < Duration::from_secs(15),
        "{e} {:?}",
        t.elapsed()
    );
    let e = cleanup(&dsn, &p, [1, 1, 1, 1]).unwrap_err();
    assert!(e.to_string().contains("55P03"), "{e}");
    tx.rollback().unwrap();
    // Once released, everything works again.
    assert!(read_metrics(&dsn, &p, &q).is_ok());
}

fn bouncer() -> u16 {
    let s = servers();
    *s.bouncer.get_or_init(|| {
        let out = Command::new(common::root().join("scripts/pgbouncer.sh"))
            .arg("start")
            .arg(s.dir.join("bouncer"))
            .arg("127.0.0.1")
            .arg(s.port.to_string())
            .output()
            .expect("run scripts/pgbouncer.sh");
        assert!(
            out.status.success(),
            "pgbouncer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    })
}

/// Through PgBouncer in transaction mode: several syncers flushing again
/// and again (so their transactions land on different server
/// connections), one round large enough to be copied through a staging
/// table (more than 5,000 rows per flush), then reads and cleanup.
#[test]
fn saves_through_pgbouncer_in_transaction_mode() {
    const BIG: usize = 1300;
    let port = bouncer();
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let prefix = format!("bouncer_{}_", std::process::id());
    let mut syncers = Vec::new();
    let mut aggs = Vec::new();
    for w in 0..4 {
        let a = agg();
        let s = Syncer::start(
            a.clone(),
            SyncerConfig {
                prefix: prefix.clone(),
                worker_id: format!("w{w}"),
                interval: Duration::from_secs(3600),
                ..SyncerConfig::new(dsn.clone())
            },
        )
        .unwrap();
        aggs.push(a);
        syncers.push(s);
    }
    for round in 0..5 {
        for (a, s) in aggs.iter().zip(&syncers) {
            a.increment_counter(&format!("round:{round}"), 1.0).unwrap();
            if round == 2 {
                for i in 0..BIG {
                    a.increment_counter(&format!("big:{i}"), 1.0).unwrap();
                }
            }
            let report = s.flush(WAIT).unwrap_or_else(|e| panic!("round {round}: {e}"));
            if round == 2 {
                assert!(report.rows_written > 5000, "{report:?}");
            }
        }
    }
    let q = common::around_today(Some(String::new()));
    for _ in 0..5 {
        let read = read_metrics(&dsn, &prefix, &q).unwrap();
        let done = read.iter().find(|s| s.key == "jobs:done").unwrap();
        assert_eq!(done.points.iter().map(|p| p.value).sum::<f64>(), 12.0);
        let (big, small): (Vec<_>, Vec<_>) = read.iter().partition(|s| s.key.starts_with("big:"));
        assert_eq!(small.len(), 6);
        assert_eq!(big.len(), BIG);
        for s in big {
            assert_eq!(s.points.iter().map(|p| p.value).sum::<f64>(), 4.0, "{}", s.key);
        }
    }
    cleanup(&dsn, &prefix, [1, 1, 1, 1]).unwrap();
    for s in syncers {
        s.stop(WAIT).unwrap();
    }
}

/// Any prefix Chancy accepts (it quotes `f"{prefix}metrics"`): quotes,
/// spaces, dots, capitals, the empty prefix; and an empty metric prefix
/// or worker id reads everything, as Chancy's get_metrics does.
#[test]
fn any_prefix_chancy_accepts() {
    let dsn = tls_dsn("127.0.0.1", "sslmode=disable");
    for prefix in ["", "Odd \"pre\"fix.; x_", "Ünï-cödé "] {
        let a = agg();
        let s = Syncer::start(
            a.clone(),
            SyncerConfig {
                prefix: prefix.into(),
                worker_id: "w1".into(),
                interval: Duration::from_secs(3600),
                ..SyncerConfig::new(dsn.clone())
            },
        )
        .unwrap();
        s.flush(WAIT).unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (mp, w) in [(None, None), (Some(""), Some("")), (Some("jobs"), Some("w1"))] {
            let q = ReadQuery {
                prefix: mp.map(str::to_owned),
                worker_id: w.map(str::to_owned),
                resolution: Resolution::Day1,
                start_secs: (now / 86400) * 86400,
                end_secs: (now / 86400 + 1) * 86400,
            };
            let read = read_metrics(&dsn, prefix, &q).unwrap();
            assert_eq!(read.len(), 1, "{prefix:?} {mp:?} {w:?}");
            assert_eq!(read[0].points[0].value, 3.0, "{prefix:?} {mp:?} {w:?}");
        }
        s.stop(WAIT).unwrap();
        let mut c = superuser();
        for t in ["metrics", "metric_definitions", "schema_version"] {
            c.batch_execute(&format!(
                "DROP TABLE \"{}\" CASCADE",
                format!("{prefix}{t}").replace('"', "\"\"")
            ))
            .unwrap();
        }
    }
}

/// The writer's own transaction waits on a table lock at most
/// lock_timeout (the writer opens its transactions with `begin`).
#[test]
fn blocked_write_fails_within_lock_timeout() {
    let p = common::prefix("locked_write");
    let a = agg();
    let s = Syncer::start(
        a.clone(),
        SyncerConfig {
            prefix: p.0.clone(),
            interval: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(1),
            ..SyncerConfig::new(common::dsn())
        },
    )
    .unwrap();
    a.increment_counter("jobs:done", 1.0).unwrap();
    s.flush(WAIT).unwrap(); // creates the tables
    let mut holder = common::client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE \"{p}metrics\", \"{p}metric_definitions\" IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    a.increment_counter("jobs:done", 1.0).unwrap();
    let t = Instant::now();
    let e = s.flush(WAIT).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.to_string().contains("55P03"), "{e}");
    tx.rollback().unwrap();
    s.flush(WAIT).unwrap();
    s.stop(WAIT).unwrap();
}
