//! Print what the syncer resolves a DSN to, as JSON, for the Python test
//! that compares it with libpq's own resolution (psycopg):
//!
//!     cargo run -p ringmetrics-postgres --example resolve_dsn -- 'DSN'
//!
//! `{"hosts": [{"host", "port", "user", "dbname", "password"}...],
//!   "sslmode", "options": {keyword: value}}` (passwords are printed: this
//! is a test tool, run on test DSNs), or `{"error": "..."}` with exit
//! status 1.

use ringmetrics_postgres::{Connector, Timeouts};

fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let dsn = std::env::args().nth(1).unwrap_or_default();
    match Connector::new(&dsn, Timeouts::default()) {
        Ok(c) => {
            let hosts: Vec<String> = c
                .targets()
                .map(|t| {
                    format!(
                        "{{\"host\": {}, \"hostaddr\": {}, \"port\": {}, \"user\": {}, \"dbname\": {}, \"password\": {}}}",
                        json(&t.host),
                        t.hostaddr.map_or("null".into(), |a| json(&a.to_string())),
                        t.port,
                        json(&t.user),
                        json(&t.dbname),
                        t.password.as_deref().map_or("null".into(), json)
                    )
                })
                .collect();
            let options: Vec<String> = c
                .options()
                .keywords()
                .filter(|k| *k != "password" && *k != "sslpassword")
                .map(|k| format!("{}: {}", json(k), json(c.options().get(k).unwrap_or(""))))
                .collect();
            println!(
                "{{\"hosts\": [{}], \"sslmode\": {}, \"connect_timeout\": {}, \"options\": {{{}}}}}",
                hosts.join(", "),
                json(c.ssl_mode().name()),
                c.timeouts().connect.as_secs(),
                options.join(", ")
            );
        }
        Err(e) => {
            println!("{{\"error\": {}}}", json(&e.to_string()));
            std::process::exit(1);
        }
    }
}
