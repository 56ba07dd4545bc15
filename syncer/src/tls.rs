//! TLS for the syncer's connections: rustls (pure Rust, `ring` provider)
//! through `tokio-postgres-rustls`, configured from libpq's `ssl*`
//! keywords. `sslmode` decides which attempts [`crate::connect`] makes;
//! this module builds what each attempt needs: how the server certificate
//! is checked (not at all, chain only, chain and host name), the roots,
//! CRLs, the client certificate and the protocol versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dsn::{ConnInfo, Env};
use crate::error::SyncError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS (unverified) if the server refuses plain.
    Allow,
    /// TLS (unverified) if the server offers it, else plain; plain again
    /// if the TLS attempt fails. libpq's default.
    Prefer,
    /// TLS, certificate unverified (verified against `sslrootcert` when
    /// that file exists, as libpq does).
    Require,
    /// TLS, certificate chain verified against `sslrootcert`.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, SyncError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(SyncError::InvalidConfig(
                    "invalid sslmode: use disable, allow, prefer, require, verify-ca or verify-full".into(),
                ));
            }
        })
    }

    /// libpq's name.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How a TLS attempt checks the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (the handshake signature is still checked).
    None,
    /// The chain up to a root of `sslrootcert`.
    Ca,
    /// The chain and the host name.
    Full,
}

/// A client certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

/// Everything TLS needs, read once from the options.
#[derive(Clone)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// What `require` verifies: `Ca` when a root file exists.
    pub require_verify: Verify,
    roots: Option<Arc<RootCertStore>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    client: Option<Identity>,
    sni: bool,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// `sslnegotiation=direct`: TLS from the first byte (PostgreSQL 17).
    pub direct: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mode", &self.mode)
            .field("require_verify", &self.require_verify)
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .field("crls", &self.crls.len())
            .field("client_certificate", &self.client.is_some())
            .field("sni", &self.sni)
            .field("direct", &self.direct)
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> SyncError {
    SyncError::InvalidConfig(msg.into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `~/.postgresql/NAME`, libpq's default location for TLS files.
fn default_file(env: &dyn Env, name: &str) -> Option<PathBuf> {
    env.home().map(|h| h.join(".postgresql").join(name))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, SyncError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("cannot read the {what} file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "the {what} file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Read `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`,
    /// `sslcrl`, `sslcrldir`, `sslsni`, `sslcertmode`,
    /// `ssl_min_protocol_version`, `ssl_max_protocol_version` and
    /// `sslnegotiation`, with libpq's defaults and checks.
    pub fn from_info(info: &ConnInfo, env: &dyn Env) -> Result<TlsSettings, SyncError> {
        let rootcert = info.get("sslrootcert");
        let system = rootcert == Some("system");
        let mode = match info.get("sslmode") {
            Some(m) => SslMode::parse(m)?,
            // libpq 16: sslrootcert=system defaults to verify-full.
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(invalid(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                mode.name()
            )));
        }
        let direct = match info.get("sslnegotiation") {
            None | Some("postgres") => false,
            Some("direct") => true,
            Some(_) => return Err(invalid("invalid sslnegotiation: use postgres or direct")),
        };
        if direct && matches!(mode, SslMode::Disable | SslMode::Allow | SslMode::Prefer) {
            return Err(invalid(format!(
                "weak sslmode \"{}\" may not be used with sslnegotiation=direct (use \"require\", \
                 \"verify-ca\" or \"verify-full\")",
                mode.name()
            )));
        }
        match info.get("gssencmode") {
            None | Some("disable") | Some("prefer") => {}
            Some("require") => {
                return Err(invalid(
                    "gssencmode=require is not supported by the ringmetrics syncer (it has no GSSAPI): use \
                     TLS (sslmode) instead",
                ));
            }
            Some(_) => return Err(invalid("invalid gssencmode: use disable, prefer or require")),
        }
        let sni = match info.get("sslsni") {
            None | Some("1") => true,
            Some("0") => false,
            Some(_) => return Err(invalid("invalid sslsni: use 0 or 1")),
        };
        if let Some(c) = info.get("sslcompression")
            && c != "0"
            && c != "1"
        {
            return Err(invalid("invalid sslcompression: use 0 or 1"));
        }
        let version = |k: &str| -> Result<Option<u8>, SyncError> {
            match info.get(k) {
                None => Ok(None),
                Some("TLSv1") => Ok(Some(0)),
                Some("TLSv1.1") => Ok(Some(1)),
                Some("TLSv1.2") => Ok(Some(2)),
                Some("TLSv1.3") => Ok(Some(3)),
                Some(_) => Err(invalid(format!("invalid {k}: use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"))),
            }
        };
        // rustls speaks TLS 1.2 and 1.3 only: libpq's default minimum is
        // TLS 1.2 already; an older minimum just means 1.2.
        let min = version("ssl_min_protocol_version")?.unwrap_or(2).max(2);
        let max = version("ssl_max_protocol_version")?.unwrap_or(3);
        let mut versions = Vec::new();
        if min <= 2 && max >= 2 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= 3 {
            versions.push(&rustls::version::TLS13);
        }
        if versions.is_empty() {
            return Err(invalid(
                "ssl_max_protocol_version is below TLSv1.2, which the syncer's TLS stack does not speak",
            ));
        }

        // Roots: sslrootcert, else ~/.postgresql/root.crt; `system` is the
        // operating system's store.
        let needs_roots = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let root_path = match rootcert {
            Some(p) if !system => Some(PathBuf::from(p)),
            Some(_) => None,
            None => default_file(env, "root.crt"),
        };
        let mut require_verify = Verify::None;
        let roots = if system {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(invalid(
                    "sslrootcert=system: no trusted root certificate found in the system's store",
                ));
            }
            Some(Arc::new(store))
        } else {
            match &root_path {
                Some(p) if p.exists() && mode != SslMode::Disable => {
                    let mut store = RootCertStore::empty();
                    for c in read_certs(p, "root certificate")? {
                        store.add(c).map_err(|e| {
                            invalid(format!("the root certificate file {} is not usable: {e}", p.display()))
                        })?;
                    }
                    if mode == SslMode::Require {
                        require_verify = Verify::Ca;
                    }
                    Some(Arc::new(store))
                }
                Some(p) if needs_roots => {
                    return Err(invalid(format!(
                        "root certificate file {} does not exist: either provide the file, use the system's \
                         trusted roots with sslrootcert=system, or change sslmode to disable server certificate \
                         verification",
                        p.display()
                    )));
                }
                None if needs_roots => {
                    return Err(invalid(
                        "sslmode verify-ca and verify-full need sslrootcert (no home directory to find \
                         ~/.postgresql/root.crt)",
                    ));
                }
                _ => None,
            }
        };

        let mut crls = Vec::new();
        if let Some(f) = info.get("sslcrl") {
            let found = CertificateRevocationListDer::pem_file_iter(f)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| invalid(format!("cannot read the sslcrl file {f}: {e}")))?;
            crls.extend(found);
        }
        if let Some(d) = info.get("sslcrldir") {
            let entries =
                std::fs::read_dir(d).map_err(|e| invalid(format!("cannot read the sslcrldir directory {d}: {e}")))?;
            for entry in entries.flatten() {
                if let Ok(found) = CertificateRevocationListDer::pem_file_iter(entry.path())
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                {
                    crls.extend(found);
                }
            }
        }

        let certmode = info.get("sslcertmode").unwrap_or("allow");
        let client = match certmode {
            "disable" => None,
            "allow" => client_identity(info, env)?,
            "require" => {
                return Err(invalid(
                    "sslcertmode=require is not supported by the ringmetrics syncer: use allow (the default)",
                ));
            }
            _ => return Err(invalid("invalid sslcertmode: use disable, allow or require")),
        };
        Ok(TlsSettings {
            mode,
            require_verify,
            roots,
            crls,
            client,
            sni,
            versions,
            direct,
        })
    }

    /// The connector for one TLS attempt.
    pub fn connector(&self, verify: Verify) -> Result<MakeRustlsConnect, SyncError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::None => Arc::new(NoVerify(provider.signature_verification_algorithms)),
            Verify::Ca | Verify::Full => {
                let roots = self
                    .roots
                    .clone()
                    .ok_or_else(|| invalid("certificate verification needs root certificates (sslrootcert)"))?;
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .with_crls(self.crls.iter().cloned())
                    .build()
                    .map_err(|e| invalid(format!("cannot build the certificate verifier: {e}")))?;
                if verify == Verify::Ca {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions)
            .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| invalid(format!("the client certificate (sslcert/sslkey) is not usable: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        // PostgreSQL 17 checks ALPN on direct TLS; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The client certificate and key: `sslcert` / `sslkey`, else
/// `~/.postgresql/postgresql.crt` / `.key`. A missing certificate file
/// means no client certificate, as in libpq.
fn client_identity(info: &ConnInfo, env: &dyn Env) -> Result<Option<Identity>, SyncError> {
    let cert = match info.get("sslcert") {
        Some(c) => PathBuf::from(c),
        None => match default_file(env, "postgresql.crt") {
            Some(c) => c,
            None => return Ok(None),
        },
    };
    if !cert.exists() {
        return Ok(None);
    }
    let chain = read_certs(&cert, "client certificate (sslcert)")?;
    let key_path = match info.get("sslkey") {
        Some(k) => PathBuf::from(k),
        None => {
            default_file(env, "postgresql.key").ok_or_else(|| invalid("a client certificate needs its key (sslkey)"))?
        }
    };
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&key_path).map_err(|e| {
            invalid(format!(
                "cannot read the private key file {} (sslkey): {e}",
                key_path.display()
            ))
        })?;
        // libpq: owned by the user and u=rw, or owned by root and u=rw,g=r.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid && meta.uid() != 0 {
            return Err(invalid(format!(
                "private key file {} must be owned by the current user or root",
                key_path.display()
            )));
        }
        let mode = meta.permissions().mode();
        let ok = if meta.uid() == 0 {
            mode & 0o037 == 0
        } else {
            mode & 0o077 == 0
        };
        if !ok {
            return Err(invalid(format!(
                "private key file {} has group or world access; it must be u=rw (0600) or less if owned by the \
                 current user, or u=rw,g=r (0640) or less if owned by root",
                key_path.display()
            )));
        }
    }
    let pem = std::fs::read(&key_path)
        .map_err(|e| invalid(format!("cannot read the private key file {}: {e}", key_path.display())))?;
    let key = if contains(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        decrypt_key(&pem, info.get("sslpassword"), &key_path)?
    } else if contains(&pem, b"Proc-Type: 4,ENCRYPTED") {
        return Err(invalid(format!(
            "the private key file {} is encrypted in OpenSSL's legacy format, which the syncer cannot decrypt: \
             convert it to encrypted PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc) and give sslpassword",
            key_path.display()
        )));
    } else {
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            invalid(format!(
                "the private key file {} is not a PEM key: {e}",
                key_path.display()
            ))
        })?
    };
    Ok(Some((chain, Arc::new(key))))
}

/// An encrypted PKCS#8 key (`-----BEGIN ENCRYPTED PRIVATE KEY-----`,
/// PBES2 as OpenSSL writes it) decrypted with `sslpassword`.
fn decrypt_key(pem: &[u8], password: Option<&str>, path: &Path) -> Result<PrivateKeyDer<'static>, SyncError> {
    use pkcs8::der::{Decode, Document};
    let password = password.ok_or_else(|| {
        invalid(format!(
            "the private key file {} is encrypted: give its password as sslpassword",
            path.display()
        ))
    })?;
    let text = std::str::from_utf8(pem)
        .map_err(|_| invalid(format!("the private key file {} is not PEM text", path.display())))?;
    let (_, doc) = Document::from_pem(text.trim())
        .map_err(|e| invalid(format!("the private key file {} is not a PEM key: {e}", path.display())))?;
    let encrypted = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| {
        invalid(format!(
            "the private key file {} is not encrypted PKCS#8: {e}",
            path.display()
        ))
    })?;
    let plain = encrypted.decrypt(password).map_err(|_| {
        invalid(format!(
            "cannot decrypt the private key file {} with sslpassword (wrong password or unsupported cipher)",
            path.display()
        ))
    })?;
    Ok(PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `sslmode=require` without a root file (and `prefer`, `allow`): any
/// certificate, but the handshake's signature must still be the
/// certificate key's, so the session keys are the server's.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root (and pass the
/// CRLs), whatever name the certificate carries.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and revocation) before the name, so a
        // name mismatch means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
