//! Connecting the way libpq does: every host of the DSN in turn (or
//! shuffled with `load_balance_hosts=random`), each with libpq's `sslmode`
//! attempts (`allow` and `prefer` fall back as libpq does), each attempt
//! bounded by `connect_timeout` as a whole (TCP, TLS, authentication).
//! Also [`begin`], the transaction every syncer statement runs in, with
//! `SET LOCAL statement_timeout` and `lock_timeout` (PgBouncer's
//! transaction pooling keeps no session state, so they are set per
//! transaction, never per session or in the startup packet).

use std::time::Duration;

use std::collections::HashMap;

use crossbeam_channel::{Receiver, bounded};
use parking_lot::Mutex;
use postgres::config::{ChannelBinding, SslNegotiation, TargetSessionAttrs};
use postgres::{Client, NoTls, Transaction};

use crate::dsn::{self, ConnInfo, Env, HostTarget, ProcessEnv};
use crate::error::SyncError;
use crate::tls::{SslMode, TlsSettings, Verify};

/// The application name the syncer reports unless the DSN sets one.
pub const APPLICATION_NAME: &str = "ringmetrics-syncer";

/// Timeouts of the syncer's connections and statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The bound on one connection attempt (TCP, TLS and authentication),
    /// per host; the DSN's `connect_timeout` (seconds) overrides it.
    pub connect: Duration,
    /// `SET LOCAL statement_timeout` in every transaction; zero: none.
    pub statement: Duration,
    /// `SET LOCAL lock_timeout` in every transaction; zero: none.
    pub lock: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            statement: Duration::from_secs(30),
            lock: Duration::from_secs(10),
        }
    }
}

/// A connection attempt's answer, once it comes.
type Pending = Receiver<Result<Client, postgres::Error>>;

/// One way to reach one host.
struct Attempt {
    config: postgres::Config,
    /// TLS, and how the certificate is checked; `None`: plain.
    tls: Option<Verify>,
}

/// What to try for one host, in order, and when to go on to the next try.
struct HostPlan {
    target: HostTarget,
    attempts: Vec<Attempt>,
    /// `allow`: retry with TLS when plain was refused by the server.
    /// `prefer`: retry plain when TLS failed.
    fallback: bool,
}

/// A parsed, validated DSN, ready to connect. `Debug` never shows a
/// password.
pub struct Connector {
    plans: Vec<HostPlan>,
    tls: TlsSettings,
    info: ConnInfo,
    timeouts: Timeouts,
    random: bool,
    secrets: Vec<String>,
    /// Attempts that outlived their bound, by (host, attempt): still
    /// waiting on the server.
    stalled: Mutex<HashMap<(usize, usize), Pending>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.info)
            .field("hosts", &self.plans.iter().map(|p| &p.target).collect::<Vec<_>>())
            .field("tls", &self.tls)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> SyncError {
    SyncError::InvalidConfig(msg.into())
}

/// libpq reads integers with `strtol` and refuses trailing garbage.
fn int_option(info: &ConnInfo, k: &str) -> Result<Option<i64>, SyncError> {
    match info.get(k) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| invalid(format!("invalid integer value for the keyword {k:?}"))),
    }
}

impl Connector {
    /// Read `dsn` with the process's environment, service file and
    /// password file.
    pub fn new(dsn: &str, timeouts: Timeouts) -> Result<Connector, SyncError> {
        Self::with_env(dsn, timeouts, &ProcessEnv)
    }

    /// [`Connector::new`] with another environment (tests).
    pub fn with_env(dsn: &str, timeouts: Timeouts, env: &dyn Env) -> Result<Connector, SyncError> {
        let info = dsn::resolve(dsn, env)?;
        let tls = TlsSettings::from_info(&info, env)?;
        let targets = dsn::targets(&info, env)?;
        let mut timeouts = timeouts;
        // libpq: zero or negative waits forever, which the syncer never
        // does (it keeps its default); 1 second means 2.
        if let Some(t) = int_option(&info, "connect_timeout")?
            && t > 0
        {
            timeouts.connect = Duration::from_secs(t.max(2) as u64);
        }
        let random = match info.get("load_balance_hosts") {
            None | Some("disable") => false,
            Some("random") => true,
            Some(_) => return Err(invalid("invalid load_balance_hosts: use disable or random")),
        };
        let mut secrets = info.secrets();
        let mut plans = Vec::with_capacity(targets.len());
        for target in targets {
            if let Some(p) = &target.password
                && !secrets.contains(p)
            {
                secrets.push(p.clone());
            }
            let base = base_config(&info, &target, &tls, timeouts)?;
            let with = |ssl: postgres::config::SslMode| {
                let mut c = base.clone();
                c.ssl_mode(ssl);
                c
            };
            use postgres::config::SslMode as Pg;
            let (attempts, fallback) = if target.unix {
                // libpq never uses TLS on Unix-domain sockets.
                (
                    vec![Attempt {
                        config: with(Pg::Disable),
                        tls: None,
                    }],
                    false,
                )
            } else {
                match tls.mode {
                    SslMode::Disable => (
                        vec![Attempt {
                            config: with(Pg::Disable),
                            tls: None,
                        }],
                        false,
                    ),
                    SslMode::Allow => (
                        vec![
                            Attempt {
                                config: with(Pg::Disable),
                                tls: None,
                            },
                            Attempt {
                                config: with(Pg::Require),
                                tls: Some(Verify::None),
                            },
                        ],
                        true,
                    ),
                    SslMode::Prefer => (
                        vec![
                            Attempt {
                                config: with(Pg::Prefer),
                                tls: Some(Verify::None),
                            },
                            Attempt {
                                config: with(Pg::Disable),
                                tls: None,
                            },
                        ],
                        true,
                    ),
                    SslMode::Require => (
                        vec![Attempt {
                            config: with(Pg::Require),
                            tls: Some(tls.require_verify),
                        }],
                        false,
                    ),
                    SslMode::VerifyCa => (
                        vec![Attempt {
                            config: with(Pg::Require),
                            tls: Some(Verify::Ca),
                        }],
                        false,
                    ),
                    SslMode::VerifyFull => {
                        if target.hostaddr.is_some() && info.get("host").is_none() {
                            return Err(invalid(
                                "sslmode=verify-full needs a host name (host) to check the certificate against, \
                                 not only hostaddr",
                            ));
                        }
                        (
                            vec![Attempt {
                                config: with(Pg::Require),
                                tls: Some(Verify::Full),
                            }],
                            false,
                        )
                    }
                }
            };
            // Fail at configuration time, not at the first flush, when a
            // TLS file is unusable.
            for a in &attempts {
                if let Some(v) = a.tls {
                    tls.connector(v)?;
                }
            }
            plans.push(HostPlan {
                target,
                attempts,
                fallback,
            });
        }
        Ok(Connector {
            plans,
            tls,
            info,
            timeouts,
            random,
            secrets,
            stalled: Mutex::new(HashMap::new()),
        })
    }

    /// The timeouts in force (the DSN's `connect_timeout` applied).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The resolved options (secrets hidden by `Debug`).
    pub fn options(&self) -> &ConnInfo {
        &self.info
    }

    /// The hosts to try, in the DSN's order.
    pub fn targets(&self) -> impl Iterator<Item = &HostTarget> {
        self.plans.iter().map(|p| &p.target)
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// The first password, for the writer's scrubbing of messages.
    pub(crate) fn secret(&self) -> Option<String> {
        self.secrets.first().cloned()
    }

    /// `message` with every password of the DSN (given or from the
    /// password file) replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut m = message.to_owned();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            m = m.replace(s.as_str(), "***");
        }
        m
    }

    fn db_error(&self, e: &postgres::Error) -> SyncError {
        let text = match e.as_db_error() {
            Some(d) => format!("{}: {}", d.code().code(), d.message()),
            None => {
                // The driver's message and its cause ("error performing TLS
                // handshake: invalid peer certificate: ...").
                let mut t = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    let text = s.to_string();
                    if !t.contains(&text) {
                        t.push_str(": ");
                        t.push_str(&text);
                    }
                    source = s.source();
                }
                t
            }
        };
        SyncError::Database(self.scrub(&text))
    }

    /// Connect to the first host that accepts, libpq's way. Every attempt
    /// is bounded by the connect timeout as a whole.
    pub fn connect(&self) -> Result<Client, SyncError> {
        let mut order: Vec<usize> = (0..self.plans.len()).collect();
        if self.random {
            shuffle(&mut order);
        }
        let mut errors = Vec::new();
        for i in order {
            let plan = &self.plans[i];
            let where_ = format!("{}:{}", plan.target.host, plan.target.port);
            for (n, attempt) in plan.attempts.iter().enumerate() {
                match self.attempt((i, n), attempt) {
                    Ok(client) => return Ok(client),
                    Err((e, fall_back)) => {
                        let last = n + 1 == plan.attempts.len();
                        let text = match e {
                            SyncError::Database(m) | SyncError::InvalidConfig(m) => m,
                            other => other.to_string(),
                        };
                        errors.push(format!("{where_}: {}", self.scrub(&text)));
                        if last || !(plan.fallback && fall_back) {
                            break;
                        }
                    }
                }
            }
        }
        Err(SyncError::Database(match errors.len() {
            1 => errors.pop().expect("one"),
            _ => format!("could not connect: {}", errors.join("; ")),
        }))
    }

    /// One attempt. On failure, whether `allow` / `prefer` may go on to
    /// the other mode: the server answered (refused, or TLS failed), as
    /// opposed to no answer at all (refused TCP, timeout).
    fn attempt(&self, key: (usize, usize), attempt: &Attempt) -> Result<Client, (SyncError, bool)> {
        let bound = self.timeouts.connect;
        // An earlier attempt that outlived its bound is still waiting on the
        // server: wait for that one again rather than start another, so a
        // server that never answers costs one thread per attempt kind, not
        // one per retry.
        let earlier = self.stalled.lock().remove(&key);
        let rx = match earlier {
            Some(rx) => rx,
            None => {
                let (tx, rx) = bounded(1);
                let config = attempt.config.clone();
                let tls = match attempt.tls {
                    Some(v) => Some(self.tls.connector(v).map_err(|e| (e, false))?),
                    None => None,
                };
                std::thread::Builder::new()
                    .name("ringmetrics-connect".into())
                    .spawn(move || {
                        let result = match tls {
                            Some(tls) => config.connect(tls),
                            None => config.connect(NoTls),
                        };
                        let _ = tx.send(result);
                    })
                    .map_err(|e| {
                        (
                            SyncError::Database(format!("cannot start a connection thread: {e}")),
                            false,
                        )
                    })?;
                rx
            }
        };
        match rx.recv_timeout(bound) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                let answered = e.as_db_error().is_some()
                    || e.to_string().starts_with("error performing TLS handshake")
                    || e.to_string().contains("server does not support TLS");
                Err((self.db_error(&e), answered))
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Left to finish alone; the next connect waits on it.
                self.stalled.lock().insert(key, rx);
                Err((
                    SyncError::Database(format!("the server did not complete the connection within {bound:?}")),
                    false,
                ))
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err((
                SyncError::Database("the connection attempt ended without an answer".into()),
                false,
            )),
        }
    }
}

/// A Fisher-Yates shuffle seeded by the standard library's random hasher
/// keys (no extra dependency for `load_balance_hosts=random`).
fn shuffle(v: &mut [usize]) {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// The driver configuration for one host, without the TLS mode.
fn base_config(
    info: &ConnInfo,
    t: &HostTarget,
    tls: &TlsSettings,
    timeouts: Timeouts,
) -> Result<postgres::Config, SyncError> {
    let mut c = postgres::Config::new();
    if t.unix {
        c.host_path(&t.host);
    } else {
        c.host(&t.host);
        if let Some(a) = t.hostaddr {
            c.hostaddr(a);
        }
    }
    c.port(t.port).user(&t.user).dbname(&t.dbname);
    if let Some(p) = &t.password {
        c.password(p.as_bytes());
    }
    c.application_name(
        info.get("application_name")
            .or_else(|| info.get("fallback_application_name"))
            .unwrap_or(APPLICATION_NAME),
    );
    if let Some(o) = info.get("options") {
        c.options(o);
    }
    // `client_encoding` (or PGCLIENTENCODING) is accepted whatever it
    // names, as Chancy's connections accept it: the syncer's own session
    // always speaks UTF8 (rust-postgres requires it), which changes nothing
    // of what is stored.
    c.connect_timeout(timeouts.connect);
    // Keepalives on by default, with ringmetrics' short defaults so a
    // half-open connection is found in about a minute, not two hours.
    let keepalives = int_option(info, "keepalives")?.unwrap_or(1) != 0;
    c.keepalives(keepalives);
    let secs = |k: &str, default: u64| -> Result<Duration, SyncError> {
        Ok(match int_option(info, k)? {
            Some(v) if v > 0 => Duration::from_secs(v as u64),
            Some(_) | None => Duration::from_secs(default),
        })
    };
    c.keepalives_idle(secs("keepalives_idle", 30)?);
    c.keepalives_interval(secs("keepalives_interval", 10)?);
    let count = int_option(info, "keepalives_count")?.filter(|v| *v > 0).unwrap_or(3);
    c.keepalives_retries(u32::try_from(count).map_err(|_| invalid("keepalives_count is too large"))?);
    if let Some(ms) = int_option(info, "tcp_user_timeout")?
        && ms > 0
    {
        c.tcp_user_timeout(Duration::from_millis(ms as u64));
    }
    c.target_session_attrs(match info.get("target_session_attrs") {
        None | Some("any") => TargetSessionAttrs::Any,
        Some("read-write") => TargetSessionAttrs::ReadWrite,
        Some("read-only") => TargetSessionAttrs::ReadOnly,
        Some("primary" | "standby" | "prefer-standby") => {
            return Err(invalid(
                "target_session_attrs primary, standby and prefer-standby are not supported by the syncer: use \
                 any, read-write or read-only",
            ));
        }
        Some(_) => return Err(invalid("invalid target_session_attrs")),
    });
    c.channel_binding(match info.get("channel_binding") {
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("disable") => ChannelBinding::Disable,
        Some("require") => ChannelBinding::Require,
        Some(_) => return Err(invalid("invalid channel_binding: use disable, prefer or require")),
    });
    if tls.direct {
        c.ssl_negotiation(SslNegotiation::Direct);
    }
    Ok(c)
}

/// Open a transaction with the syncer's timeouts (`SET LOCAL`, so they end
/// with it and nothing outlives it on a pooled server connection). Every
/// write transaction starts here.
pub fn begin<'a>(client: &'a mut Client, timeouts: &Timeouts) -> Result<Transaction<'a>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
        timeouts.statement.as_millis(),
        timeouts.lock.as_millis()
    ))?;
    Ok(tx)
}
