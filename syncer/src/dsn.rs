//! libpq's connection string, read the way libpq reads it: a
//! `postgresql://` URI or `key=value` pairs (single quotes, backslash
//! escapes), then the service file, then the `PG*` environment variables,
//! then libpq's defaults; passwords from `~/.pgpass` per host.
//!
//! Nothing here ever puts a value into an error message: a message names
//! the keyword or the part of the URI that is wrong, never what it holds,
//! because any of them may be a password (or a piece of one: `password=a b`
//! makes `b` look like a keyword).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::SyncError;

/// What the syncer does with a libpq keyword.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Support {
    /// Honoured.
    Yes,
    /// Accepted and has no effect here (GSSAPI details, SSL compression).
    Ignored,
    /// Refused with an error naming the keyword.
    No,
}

/// Every keyword libpq 18 knows: name, environment variable, support.
const KEYWORDS: &[(&str, Option<&str>, Support)] = &[
    ("host", Some("PGHOST"), Support::Yes),
    ("hostaddr", Some("PGHOSTADDR"), Support::Yes),
    ("port", Some("PGPORT"), Support::Yes),
    ("dbname", Some("PGDATABASE"), Support::Yes),
    ("user", Some("PGUSER"), Support::Yes),
    ("password", Some("PGPASSWORD"), Support::Yes),
    ("passfile", Some("PGPASSFILE"), Support::Yes),
    ("service", Some("PGSERVICE"), Support::Yes),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT"), Support::Yes),
    ("client_encoding", Some("PGCLIENTENCODING"), Support::Yes),
    ("options", Some("PGOPTIONS"), Support::Yes),
    ("application_name", Some("PGAPPNAME"), Support::Yes),
    ("fallback_application_name", None, Support::Yes),
    ("keepalives", None, Support::Yes),
    ("keepalives_idle", None, Support::Yes),
    ("keepalives_interval", None, Support::Yes),
    ("keepalives_count", None, Support::Yes),
    ("tcp_user_timeout", None, Support::Yes),
    ("sslmode", Some("PGSSLMODE"), Support::Yes),
    ("sslnegotiation", Some("PGSSLNEGOTIATION"), Support::Yes),
    ("sslcompression", Some("PGSSLCOMPRESSION"), Support::Ignored),
    ("sslcert", Some("PGSSLCERT"), Support::Yes),
    ("sslkey", Some("PGSSLKEY"), Support::Yes),
    ("sslpassword", None, Support::Yes),
    ("sslcertmode", Some("PGSSLCERTMODE"), Support::Yes),
    ("sslrootcert", Some("PGSSLROOTCERT"), Support::Yes),
    ("sslcrl", Some("PGSSLCRL"), Support::Yes),
    ("sslcrldir", Some("PGSSLCRLDIR"), Support::Yes),
    ("sslsni", Some("PGSSLSNI"), Support::Yes),
    (
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Support::Yes,
    ),
    (
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Support::Yes,
    ),
    ("channel_binding", Some("PGCHANNELBINDING"), Support::Yes),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS"), Support::Yes),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS"), Support::Yes),
    ("gssencmode", Some("PGGSSENCMODE"), Support::Yes),
    ("krbsrvname", Some("PGKRBSRVNAME"), Support::Ignored),
    ("gsslib", Some("PGGSSLIB"), Support::Ignored),
    ("gssdelegation", Some("PGGSSDELEGATION"), Support::Ignored),
    ("require_auth", Some("PGREQUIREAUTH"), Support::No),
    ("requirepeer", Some("PGREQUIREPEER"), Support::No),
    ("replication", None, Support::No),
    // libpq 18.
    ("sslkeylogfile", Some("PGSSLKEYLOGFILE"), Support::No),
    ("min_protocol_version", Some("PGMINPROTOCOLVERSION"), Support::No),
    ("max_protocol_version", Some("PGMAXPROTOCOLVERSION"), Support::No),
    ("scram_client_key", None, Support::No),
    ("scram_server_key", None, Support::No),
    ("oauth_issuer", None, Support::No),
    ("oauth_client_id", None, Support::No),
    ("oauth_client_secret", None, Support::No),
    ("oauth_scope", None, Support::No),
];

/// Keywords whose value is a secret: never shown, scrubbed from messages.
const SECRETS: &[&str] = &[
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
];

/// The keywords the syncer honours or accepts, for documentation and
/// error messages.
pub fn supported_keywords() -> impl Iterator<Item = &'static str> {
    KEYWORDS.iter().filter(|k| k.2 != Support::No).map(|k| k.0)
}

fn keyword(name: &str) -> Option<&'static (&'static str, Option<&'static str>, Support)> {
    KEYWORDS.iter().find(|k| k.0 == name)
}

fn invalid(msg: impl Into<String>) -> SyncError {
    SyncError::InvalidConfig(msg.into())
}

/// Where the resolution reads the process environment and files: the real
/// ones, or a table in tests.
pub trait Env {
    /// An environment variable (`None` when unset).
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory (libpq: `$HOME`, else the password
    /// database).
    fn home(&self) -> Option<PathBuf>;
    /// The operating-system user name (libpq: the effective uid's name).
    fn os_user(&self) -> Option<String>;
}

/// The process's own environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn home(&self) -> Option<PathBuf> {
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return Some(PathBuf::from(h));
        }
        passwd_entry().map(|(_, dir)| dir)
    }

    fn os_user(&self) -> Option<String> {
        passwd_entry().map(|(name, _)| name)
    }
}

/// The effective user's name and home directory from the password database.
fn passwd_entry() -> Option<(String, PathBuf)> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16384];
    // SAFETY: `passwd` is plain old data; zeroed is a valid (empty) value
    // that getpwuid_r overwrites.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `pw` and `result` are
    // locals, `buf` is a live buffer of the length given.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings
    // inside `buf`, which outlives these borrows.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned();
    let dir = if pw.pw_dir.is_null() {
        PathBuf::new()
    } else {
        // SAFETY: as above.
        PathBuf::from(std::ffi::OsStr::from_bytes(
            unsafe { CStr::from_ptr(pw.pw_dir) }.to_bytes(),
        ))
    };
    Some((name, dir))
}

/// Resolved libpq options: what the string, the service file and the
/// environment set, keyword by keyword. `Debug` shows secrets as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    values: BTreeMap<&'static str, String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if SECRETS.contains(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl ConnInfo {
    /// The value of `keyword`, if set (empty values count as unset, as in
    /// libpq).
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.values.get(keyword).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every secret value (passwords), to scrub from messages.
    pub fn secrets(&self) -> Vec<String> {
        SECRETS.iter().filter_map(|k| self.get(k)).map(str::to_owned).collect()
    }

    fn set(&mut self, keyword: &'static str, value: String) {
        self.values.insert(keyword, value);
    }

    /// Keywords set, in order (for tests and the resolve example).
    pub fn keywords(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.keys().copied()
    }
}

/// Read `dsn` (URI or `key=value`), then fill unset options from the
/// service file, the environment, in libpq's order. Per-host defaults
/// (socket directory, port, passfile) are applied by [`targets`].
pub fn resolve(dsn: &str, env: &dyn Env) -> Result<ConnInfo, SyncError> {
    let pairs = parse(dsn)?;
    let mut info = ConnInfo::default();
    for (k, v) in pairs {
        info.set(k, v);
    }
    // The service file fills what the string left unset.
    let service = info
        .get("service")
        .map(str::to_owned)
        .or_else(|| env.var("PGSERVICE").filter(|s| !s.is_empty()));
    if let Some(name) = service {
        for (k, v) in service_values(&name, env)? {
            if info.get(k).is_none() {
                info.set(k, v);
            }
        }
    }
    for (name, var, _) in KEYWORDS {
        if info.get(name).is_none()
            && let Some(v) = var.and_then(|var| env.var(var)).filter(|v| !v.is_empty())
        {
            info.set(name, v);
        }
    }
    for (name, _, support) in KEYWORDS {
        if *support == Support::No && info.get(name).is_some() {
            return Err(invalid(format!(
                "the libpq keyword {name:?} is not supported by the ringmetrics syncer (set in the DSN, the \
                 service file or its PG* environment variable)"
            )));
        }
    }
    Ok(info)
}

/// Split a connection string into (keyword, value) pairs, checking every
/// keyword against libpq's list.
pub fn parse(dsn: &str) -> Result<Vec<(&'static str, String)>, SyncError> {
    // `quoted`: the value was delimited (quotes, or a URI's `&`), so the
    // next word cannot be a piece of it.
    let raw: Vec<(String, String, bool)> = if dsn.starts_with("postgresql://") || dsn.starts_with("postgres://") {
        parse_uri(dsn)?.into_iter().map(|(k, v)| (k, v, true)).collect()
    } else {
        parse_pairs(dsn)?
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut after_secret = false;
    for (k, v, quoted) in raw {
        match keyword(&k) {
            Some(kw) => {
                after_secret = SECRETS.contains(&kw.0) && !quoted;
                out.push((kw.0, v));
            }
            None if after_secret => {
                return Err(invalid(
                    "the DSN has an unknown keyword right after an unquoted password (not named: it may be a \
                     piece of the password): quote a password that contains spaces (password='...')",
                ));
            }
            None => {
                return Err(invalid(format!(
                    "the DSN has the keyword {k:?}, which libpq does not know \
                     (the syncer supports: {})",
                    supported_keywords().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// libpq's `key = value` grammar: whitespace around `=` allowed; a value
/// is a run of non-space characters or a single-quoted string; a backslash
/// escapes the next character in both.
fn parse_pairs(s: &str) -> Result<Vec<(String, String, bool)>, SyncError> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    let mut previous_secret = false;
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            // The word may be a piece of an unquoted password: never show it.
            return Err(invalid(if previous_secret {
                "the DSN has a word without \"=\" right after a password: quote a password \
                 that contains spaces (password='...')"
                    .to_owned()
            } else if keyword(&key).is_some() {
                format!("missing \"=\" after the keyword {key:?} in the DSN")
            } else {
                "the DSN has a word without \"=\" (key=value pairs, or a postgresql:// URI)".to_owned()
            }));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        let quoted = it.peek() == Some(&'\'');
        if quoted {
            it.next();
            loop {
                match it.next() {
                    None => {
                        return Err(invalid(format!(
                            "unterminated quoted value for the keyword {key:?} in the DSN"
                        )));
                    }
                    Some('\\') => {
                        if let Some(c) = it.next() {
                            value.push(c);
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(e) = it.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        previous_secret = SECRETS.contains(&key.as_str()) && !quoted;
        out.push((key, value, quoted));
    }
}

/// `%XX` decoding, as libpq does it (`%00` is refused).
fn percent_decode(s: &str, what: &str) -> Result<String, SyncError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(0) => return Err(invalid(format!("forbidden %00 in the {what} of the DSN URI"))),
                Some(v) => out.push(v),
                None => {
                    return Err(invalid(format!(
                        "invalid percent-encoding in the {what} of the DSN URI"
                    )));
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("the {what} of the DSN URI is not UTF-8")))
}

/// `postgresql://[user[:password]@][host[:port][,...]][/dbname][?k=v&...]`.
fn parse_uri(s: &str) -> Result<Vec<(String, String)>, SyncError> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("checked by the caller");
    let mut out = Vec::new();
    // Credentials, as libpq finds them: the first '@' before any '/'
    // (an '@' or '/' inside a password must be percent-encoded).
    let (userinfo, rest) = match rest.find(['@', '/']) {
        Some(at) if rest.as_bytes()[at] == b'@' => (Some(&rest[..at]), &rest[at + 1..]),
        _ => (None, rest),
    };
    if let Some(ui) = userinfo {
        let (user, password) = match ui.find(':') {
            Some(c) => (&ui[..c], Some(&ui[c + 1..])),
            None => (ui, None),
        };
        if !user.is_empty() {
            out.push(("user".into(), percent_decode(user, "user name")?));
        }
        if let Some(p) = password {
            out.push(("password".into(), percent_decode(p, "password")?));
        }
    }
    let end_of_hosts = rest.find(['/', '?']).unwrap_or(rest.len());
    let (hostspec, rest) = rest.split_at(end_of_hosts);
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostspec.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let close = v6
                    .find(']')
                    .ok_or_else(|| invalid("missing \"]\" in an IPv6 host address of the DSN URI"))?;
                let after = &v6[close + 1..];
                let port = match after.strip_prefix(':') {
                    Some(p) => p,
                    None if after.is_empty() => "",
                    None => {
                        return Err(invalid(
                            "unexpected character after an IPv6 host address in the DSN URI",
                        ));
                    }
                };
                (&v6[..close], port)
            } else {
                match spec.rfind(':') {
                    Some(c) => (&spec[..c], &spec[c + 1..]),
                    None => (spec, ""),
                }
            };
            hosts.push(percent_decode(host, "host")?);
            ports.push(percent_decode(port, "port")?);
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.push(("host".into(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".into(), ports.join(",")));
        }
    }
    let (path, query) = match rest.find('?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    if let Some(db) = path.strip_prefix('/')
        && !db.is_empty()
    {
        out.push(("dbname".into(), percent_decode(db, "database name")?));
    }
    if let Some(q) = query {
        for param in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param
                .split_once('=')
                .ok_or_else(|| invalid("a URI query parameter of the DSN URI has no \"=\""))?;
            let k = percent_decode(k, "query parameter name")?;
            let v = percent_decode(v, "query parameters")?;
            // libpq's JDBC compatibility: ssl=true means sslmode=require.
            if k == "ssl" {
                if v != "true" {
                    return Err(invalid("the URI parameter \"ssl\" only accepts \"true\""));
                }
                out.push(("sslmode".into(), "require".into()));
                continue;
            }
            if keyword(&k).is_none() {
                return Err(invalid(format!(
                    "the DSN URI has the query parameter {k:?}, which libpq does not know (the \
                     syncer supports: {})",
                    supported_keywords().collect::<Vec<_>>().join(", ")
                )));
            }
            out.push((k, v));
        }
    }
    Ok(out)
}

/// The service file's values for `name`: the user's file
/// (`PGSERVICEFILE`, else `~/.pg_service.conf`) first, then the system's
/// (`PGSYSCONFDIR/pg_service.conf`, default `/etc/postgresql-common`).
fn service_values(name: &str, env: &dyn Env) -> Result<Vec<(&'static str, String)>, SyncError> {
    let mut files = Vec::new();
    match env.var("PGSERVICEFILE").filter(|v| !v.is_empty()) {
        Some(f) => files.push(PathBuf::from(f)),
        None => {
            if let Some(h) = env.home() {
                files.push(h.join(".pg_service.conf"));
            }
        }
    }
    let sysconf = env
        .var("PGSYSCONFDIR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/etc/postgresql-common".into());
    files.push(Path::new(&sysconf).join("pg_service.conf"));
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(values) = service_section(&text, name, file)? {
            return Ok(values);
        }
    }
    Err(invalid(format!(
        "the service {name:?} is not defined in {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

/// The `[name]` section of a service file, if there is one.
fn service_section(text: &str, name: &str, file: &Path) -> Result<Option<Vec<(&'static str, String)>>, SyncError> {
    let mut found = None::<Vec<(&'static str, String)>>;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            inside = section.strip_suffix(']') == Some(name);
            if inside {
                found = Some(Vec::new());
            }
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(invalid(format!(
                "syntax error in service file {}, line {}",
                file.display(),
                n + 1
            )));
        };
        let k = k.trim();
        let kw = keyword(k).ok_or_else(|| {
            invalid(format!(
                "service file {}, line {}: unknown keyword {k:?}",
                file.display(),
                n + 1
            ))
        })?;
        if kw.0 == "service" {
            return Err(invalid(format!(
                "service file {}, line {}: nested service specifications are not supported",
                file.display(),
                n + 1
            )));
        }
        if let Some(values) = found.as_mut() {
            values.push((kw.0, v.trim().to_owned()));
        }
    }
    Ok(found)
}

/// libpq's default socket directory: Debian's `/var/run/postgresql` when it
/// exists, else `/tmp` (libpq's own default).
pub fn default_socket_dir() -> &'static str {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    }
}

/// One host to try, with what libpq resolves for it.
#[derive(Clone, PartialEq, Eq)]
pub struct HostTarget {
    /// The host name, IP address or socket directory (`host`), or the
    /// address when only `hostaddr` was given.
    pub host: String,
    /// `hostaddr`, if given: the address to connect to (the host name is
    /// still used for TLS).
    pub hostaddr: Option<std::net::IpAddr>,
    /// The port.
    pub port: u16,
    /// The user name.
    pub user: String,
    /// The database name.
    pub dbname: String,
    /// The password: the DSN's, the service file's or `PGPASSWORD`, else
    /// the password file's line for this host.
    pub password: Option<String>,
    /// A Unix-domain socket directory rather than TCP.
    pub unix: bool,
}

impl fmt::Debug for HostTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTarget")
            .field("host", &self.host)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("unix", &self.unix)
            .finish()
    }
}

/// The hosts to try, in order, with libpq's defaults: host = the socket
/// directory, port 5432, user = the operating-system user, dbname = user,
/// password from the password file when none was given.
pub fn targets(info: &ConnInfo, env: &dyn Env) -> Result<Vec<HostTarget>, SyncError> {
    let split = |k: &str| -> Vec<String> {
        info.get(k)
            .map_or_else(Vec::new, |v| v.split(',').map(|s| s.trim().to_owned()).collect())
    };
    let hosts = split("host");
    let addrs = split("hostaddr");
    let ports = split("port");
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(invalid(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        )));
    }
    let n = hosts.len().max(addrs.len()).max(1);
    if ports.len() > 1 && ports.len() != n {
        return Err(invalid(format!(
            "could not match {} port numbers to {n} hosts",
            ports.len()
        )));
    }
    let user = match info.get("user") {
        Some(u) => u.to_owned(),
        None => env
            .os_user()
            .ok_or_else(|| invalid("no user name given and the operating-system user cannot be found"))?,
    };
    let dbname = info.get("dbname").unwrap_or(&user).to_owned();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let addr = match addrs.get(i).filter(|a| !a.is_empty()) {
            Some(a) => Some(
                a.parse::<std::net::IpAddr>()
                    .map_err(|_| invalid(format!("hostaddr number {} is not a numeric IP address", i + 1)))?,
            ),
            None => None,
        };
        let host = match hosts.get(i).filter(|h| !h.is_empty()) {
            Some(h) => h.clone(),
            None => match addr {
                Some(a) => a.to_string(),
                None => default_socket_dir().to_owned(),
            },
        };
        if host.starts_with('@') {
            return Err(invalid(
                "abstract Unix-domain sockets (a host starting with \"@\") are not supported by the syncer",
            ));
        }
        let unix = addr.is_none() && host.starts_with('/');
        let port_text = ports
            .get(i)
            .or_else(|| if ports.len() == 1 { ports.first() } else { None })
            .filter(|p| !p.is_empty())
            .map_or("5432", String::as_str);
        let port: u16 = port_text
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("invalid port number for host number {}", i + 1)))?;
        let password = match info.get("password") {
            Some(p) => Some(p.to_owned()),
            None => passfile_password(info, env, &host, port, &dbname, &user),
        };
        out.push(HostTarget {
            host,
            hostaddr: addr,
            port,
            user: user.clone(),
            dbname: dbname.clone(),
            password,
            unix,
        });
    }
    Ok(out)
}

/// The password file: `passfile`, else `PGPASSFILE` (already folded into
/// `passfile` by [`resolve`]), else `~/.pgpass`.
pub fn passfile_path(info: &ConnInfo, env: &dyn Env) -> Option<PathBuf> {
    match info.get("passfile") {
        Some(p) => Some(PathBuf::from(p)),
        None => env.home().map(|h| h.join(".pgpass")),
    }
}

/// The first line of the password file matching
/// `hostname:port:database:username`, as libpq reads it: `*` matches
/// anything, `\` escapes `:` and `\`, the default socket directory matches
/// `localhost`, and a file readable by group or others is ignored (with a
/// warning, as libpq does).
fn passfile_password(info: &ConnInfo, env: &dyn Env, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = passfile_path(info, env)?;
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "ringmetrics: password file {} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = if host == default_socket_dir() {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = passfile_fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |field: &str, want: &str| field == "*" || field == want;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Split a password-file line on unescaped `:` (the fifth field keeps any
/// further colons).
fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("never empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TestEnv(HashMap<&'static str, String>, PathBuf);

    impl Env for TestEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            Some(self.1.clone())
        }
        fn os_user(&self) -> Option<String> {
            Some("osuser".into())
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> TestEnv {
        TestEnv(
            vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            PathBuf::from("/nonexistent-home"),
        )
    }

    fn pairs(dsn: &str) -> Vec<(&'static str, String)> {
        parse(dsn).unwrap()
    }

    #[test]
    fn key_value_quoting_and_escapes() {
        assert_eq!(
            pairs(r"host = db  port=5433 password='a b\'c' user=x\ y dbname=''"),
            [
                ("host", "db".into()),
                ("port", "5433".into()),
                ("password", "a b'c".into()),
                ("user", "x y".into()),
                ("dbname", String::new()),
            ]
        );
        assert!(parse("host='x").unwrap_err().to_string().contains("unterminated"));
    }

    #[test]
    fn uri_forms() {
        assert_eq!(
            pairs("postgresql://u%40x:p%3Aw@h1:5433,[::1]:5434,h3/d%20b?sslmode=verify-full&application_name=a"),
            [
                ("user", "u@x".into()),
                ("password", "p:w".into()),
                ("host", "h1,::1,h3".into()),
                ("port", "5433,5434,".into()),
                ("dbname", "d b".into()),
                ("sslmode", "verify-full".into()),
                ("application_name", "a".into()),
            ]
        );
        assert_eq!(pairs("postgres://"), []);
        assert_eq!(
            pairs("postgresql://%2Fvar%2Frun%2Fpostgresql/db?ssl=true"),
            [
                ("host", "/var/run/postgresql".into()),
                ("dbname", "db".into()),
                ("sslmode", "require".into())
            ]
        );
        assert_eq!(
            pairs("postgresql:///db?host=/tmp"),
            [("dbname", "db".into()), ("host", "/tmp".into())]
        );
    }

    #[test]
    fn errors_name_keywords_never_values() {
        for (dsn, secret) in [
            ("host=x password=hunter2 bogus_key=1", "hunter2"),
            ("host=x password=hunter 2", "hunter"),
            ("host=x password=hunter two=3", "hunter"),
            ("postgresql://u:hunter2@h/db?bogus=hunter2", "hunter2"),
            ("postgresql://u:hunter%zz@h/db", "hunter"),
            ("password='hunter 2", "hunter"),
            ("host=x hunter2", "hunter2"),
        ] {
            let e = parse(dsn).unwrap_err().to_string();
            assert!(!e.contains(secret), "{dsn}: {e}");
        }
        let e = parse("host=x bogus_key=1").unwrap_err().to_string();
        assert!(e.contains("\"bogus_key\""), "{e}");
        let e = resolve("host=x requirepeer=postgres", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"requirepeer\"") && !e.contains("postgres\""), "{e}");
    }

    #[test]
    fn environment_fills_unset_options_and_defaults_apply() {
        let e = env(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGSSLMODE", "require"),
        ]);
        let info = resolve("host=dsnhost", &e).unwrap();
        assert_eq!(info.get("sslmode"), Some("require"));
        let t = targets(&info, &e).unwrap();
        assert_eq!(
            (t[0].host.as_str(), t[0].port, t[0].user.as_str(), t[0].dbname.as_str()),
            ("dsnhost", 6000, "envuser", "envuser")
        );
        let t = targets(&resolve("", &env(&[])).unwrap(), &env(&[])).unwrap();
        assert_eq!(
            (
                t[0].host.as_str(),
                t[0].port,
                t[0].user.as_str(),
                t[0].dbname.as_str(),
                t[0].unix
            ),
            (default_socket_dir(), 5432, "osuser", "osuser", true)
        );
        let t = targets(&resolve("host=a,b,c port=1,2,3", &e).unwrap(), &e).unwrap();
        assert_eq!(t.iter().map(|t| t.port).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(targets(&resolve("host=a,b,c port=1,2", &e).unwrap(), &e).is_err());
        let t = targets(&resolve("hostaddr=127.0.0.1", &env(&[])).unwrap(), &env(&[])).unwrap();
        assert_eq!((t[0].host.as_str(), t[0].unix), ("127.0.0.1", false));
    }

    #[test]
    fn service_and_password_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rm-dsn-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let services = dir.join("services.conf");
        std::fs::write(
            &services,
            "# comment\n[other]\nhost=wrong\n[svc]\nhost=svchost\nport = 7000\ndbname=svcdb\n",
        )
        .unwrap();
        let pass = dir.join("pgpass");
        std::fs::write(
            &pass,
            "# c\nother:*:*:*:nope\nsvchost:7000:svcdb:bob:pa\\:ss\\\\word\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = env(&[
            ("PGSERVICEFILE", services.to_str().unwrap()),
            ("PGPASSFILE", pass.to_str().unwrap()),
        ]);
        let info = resolve("service=svc user=bob port=7000", &e).unwrap();
        let t = targets(&info, &e).unwrap();
        assert_eq!(
            (t[0].host.as_str(), t[0].port, t[0].dbname.as_str()),
            ("svchost", 7000, "svcdb")
        );
        assert_eq!(t[0].password.as_deref(), Some(r"pa:ss\word"));
        assert!(!format!("{t:?} {info:?}").contains("pa:ss"));
        let t = targets(&resolve("host=elsewhere user=x", &e).unwrap(), &e).unwrap();
        assert_eq!(t[0].password.as_deref(), Some("fallback"));
        // An explicit password wins; a world-readable file is ignored.
        let t = targets(&resolve("host=svchost user=bob password=given", &e).unwrap(), &e).unwrap();
        assert_eq!(t[0].password.as_deref(), Some("given"));
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = targets(&resolve("host=elsewhere user=x", &e).unwrap(), &e).unwrap();
        assert_eq!(t[0].password, None);
        let err = resolve("service=missing", &e).unwrap_err().to_string();
        assert!(err.contains("\"missing\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
