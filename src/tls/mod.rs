//! TLS with rustls: server configs for listeners (PEM certificates and keys, a certificate
//! chosen by SNI, ALPN `h2` and `http/1.1`) and client configs for upstreams that speak HTTPS.
//!
//! Certificates are read when a config is validated, so a missing or broken file is a config
//! error with its location, and a reload re-reads them: new connections get the new
//! certificates, open ones keep theirs.

pub mod outbound;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", file.display())]
    NoCertificate { file: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, RSA or EC): {message}", file.display())]
    NoKey { file: PathBuf, message: String },
    #[error("the key in {} does not fit the certificate in {}: {source}", key.display(), cert.display())]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{} holds no usable CA certificate", file.display())]
    NoCa { file: PathBuf },
    #[error("no trusted root certificates were found on this system; name a `ca` file")]
    NoSystemRoots,
}

/// The crypto provider every config uses (ring: builds without cmake or nasm).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Loads one certificate chain and its key.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certified_key_pem(&read(cert)?, &read(key)?, cert, key)
}

/// One certificate chain and its key from PEM bytes already read; `cert` and `key` name the
/// files in errors.
pub fn certified_key_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        file: key.to_path_buf(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| TlsError::Key {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// Chooses a certificate by the client's SNI: the first whose names cover it, else the first
/// of all (the default, also for clients that send no SNI).
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn choose(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let name = sni
            .and_then(|n| DnsName::try_from(n).ok())
            .map(ServerName::DnsName);
        name.and_then(|name| {
            self.keys.iter().find(|k| {
                k.end_entity_cert().is_ok_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
        })
        .unwrap_or(&self.keys[0])
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()).clone())
    }
}

/// A listener's server config: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, certificates chosen
/// by SNI. `keys` must not be empty (validation requires a certificate).
pub fn server_config(keys: Vec<CertifiedKey>) -> Arc<ServerConfig> {
    assert!(
        !keys.is_empty(),
        "a TLS listener has at least one certificate"
    );
    let resolver = SniResolver {
        keys: keys.into_iter().map(Arc::new).collect(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session resumption (tickets), as nginx does by default: a returning client skips
    // the full handshake. Without a ticketer rustls resumes only from a 256-entry memory cache.
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Arc::new(config)
}

/// A client config trusting the CA certificates in `ca`, or the system's roots without one.
/// ALPN is left empty: the connector sets it from the protocols it enables.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(file) => ca_roots(&read(file)?, file)?,
        None => system_roots()?,
    };
    Ok(client_config_with(roots))
}

/// The CA certificates in the PEM bytes of `file`.
pub fn ca_roots(pem: &[u8], file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem).filter_map(Result::ok) {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa {
            file: file.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The system's trusted roots (the files `rustls-native-certs` finds: `SSL_CERT_FILE`, or the
/// distribution's bundle).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}

/// A client config trusting `roots`, TLS 1.2 and 1.3.
pub fn client_config_with(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client config that trusts nothing: for connectors that must exist but never speak TLS
/// (plain-HTTP upstreams), or whose roots could not load.
pub fn no_roots_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
        .clone()
}
