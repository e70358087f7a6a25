//! TLS configuration for `wss://` and `https://` (cargo feature `tls`).
//!
//! A [`TlsConfig`] is a shared, immutable `rustls::ServerConfig`. Put one in
//! [`Config::tls`](crate::Config::tls) and the server speaks TLS on its
//! listening port: every accepted connection runs the TLS handshake first,
//! then the HTTP upgrade (or a plain HTTP request) inside it. Replace it on
//! a running server with [`Handle::reload_tls`](crate::Handle::reload_tls):
//! new handshakes use the new configuration, open connections keep theirs.
//!
//! Build one from PEM files ([`TlsConfig::from_pem_files`]), from PEM bytes
//! ([`TlsConfig::from_pem`]), or bring your own `rustls::ServerConfig`
//! ([`TlsConfig::from_rustls`]) for SNI, client certificates or a custom
//! certificate resolver.
//!
//! Cryptography comes from an explicit provider ([`provider`]), never from
//! rustls' process-wide default: `ring` with the `tls` feature, AWS-LC
//! (`aws-lc-rs`) with `tls-aws-lc`. ring is the default because it builds
//! with only a C compiler into a smaller binary, keeps less memory per
//! connection, and echoes small messages as fast. AWS-LC adds the
//! post-quantum hybrid key exchange X25519MLKEM768, which current Chrome
//! and Firefox offer first (with ring they get X25519), and spends 7–12%
//! less CPU on 16 KiB messages; docs/PERFORMANCE.md has the measurements.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol wsloop offers: WebSockets (RFC 6455) and its plain
/// HTTP routes are HTTP/1.1. A client that offers only `h2` is refused by
/// the TLS handshake, as RFC 7301 asks.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A TLS server configuration, cheap to clone (one `Arc`).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
/// let tls = wsloop::TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
/// let mut config = wsloop::Config::default();
/// config.tls = Some(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Reads a certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files.
    ///
    /// Fails with a message naming the file for a missing or unreadable
    /// file, a file with no certificate or no key, or a key that does not
    /// belong to the certificate.
    pub fn from_pem_files(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (cert_file, key_file) = (cert_file.as_ref(), key_file.as_ref());
        let certs = parse_certs(&read(cert_file)?, Some(cert_file))?;
        let key = parse_key(&read(key_file)?, Some(key_file))?;
        TlsConfig::from_der(certs, key)
    }

    /// Like [`TlsConfig::from_pem_files`], from PEM text already in memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_der(parse_certs(cert_pem, None)?, parse_key(key_pem, None)?)
    }

    /// A certificate chain and key in DER, with wsloop's defaults: the
    /// [`provider`], TLS 1.2 and 1.3, ALPN `http/1.1`, no client
    /// authentication.
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, TlsError> {
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::Rustls)?;
        server.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Ok(TlsConfig::from_rustls(Arc::new(server)))
    }

    /// Uses a `rustls::ServerConfig` built by the application, as it is
    /// (its ALPN list included: offer `http/1.1`, [`ALPN_HTTP_1_1`], if you
    /// set one).
    pub fn from_rustls(server: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig { server }
    }

    /// The rustls configuration new connections are created with.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }
}

/// The crypto provider [`TlsConfig::from_der`] builds with: `ring`, or
/// AWS-LC with the `tls-aws-lc` feature. For applications that build their
/// own `ServerConfig` the same way.
///
/// ```
/// let provider = wsloop::tls::provider();
/// assert!(!provider.cipher_suites.is_empty());
/// ```
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "tls-aws-lc")]
    return Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(not(feature = "tls-aws-lc"))]
    #[allow(deprecated)] // see the module docs on post-quantum key exchange
    Arc::new(rustls::crypto::ring::default_provider())
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &self.server.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Two configurations are equal when they are the same shared one.
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }
}

/// Why a [`TlsConfig`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The PEM text was malformed, or held no certificate or no private
    /// key.
    Pem {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// What was wrong.
        problem: String,
    },
    /// rustls refused the certificate or key (for example a key that does
    /// not match the certificate).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem {
                path: Some(path),
                problem,
            } => write!(f, "{}: {problem}", path.display()),
            TlsError::Pem {
                path: None,
                problem,
            } => f.write_str(problem),
            TlsError::Rustls(rustls::Error::InconsistentKeys(_)) => {
                f.write_str("the private key does not match the certificate")
            }
            TlsError::Rustls(e) => write!(f, "certificate or key refused: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rustls(e) => Some(e),
            TlsError::Pem { .. } => None,
        }
    }
}

fn pem_error(path: Option<&Path>, problem: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.map(Path::to_owned),
        problem: problem.into(),
    }
}

fn parse_certs(
    pem_text: &[u8],
    path: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| pem_error(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn parse_key(pem_text: &[u8], path: Option<&Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|e| match e {
        pem::Error::NoItemsFound => pem_error(path, "no PRIVATE KEY block found"),
        e => pem_error(path, format!("malformed PEM: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_with_alpn_http_1_1() {
        let (cert, key) = generated();
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(
            tls.server_config().alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(tls.clone(), tls);
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let (cert, _) = generated();
        let (_, other_key) = generated();
        let e = TlsConfig::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(
            matches!(e, TlsError::Rustls(rustls::Error::InconsistentKeys(_))),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the private key does not match the certificate"
        );
    }

    #[test]
    fn missing_blocks_and_files_are_named() {
        let (cert, key) = generated();
        let e = TlsConfig::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "no CERTIFICATE block found");
        let e = TlsConfig::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "no PRIVATE KEY block found");
        let e =
            TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/cert.pem"),
            "{e}"
        );
    }
}
