//! TLS with rustls (one TLS library; no OpenSSL): server configs for listeners (STRICT and
//! PERMISSIVE modes, SNI, mutual TLS with exact SAN checks), client configs for origination
//! (trust, SANs or the discovery name, client certificates), and certificate facts (SANs,
//! expiry) for stats and the admin API.
//!
//! Configs are built off the request path from files and swapped whole on reload: new
//! handshakes use the new material, established connections keep theirs.
//! Defaults: TLS 1.2 and 1.3 only, rustls' modern cipher suites, no renegotiation (rustls has
//! none), session resumption on (server session cache + tickets; client session cache).

mod stream;
mod verify;

pub use stream::ServerStream;

use crate::config::{CertificateSpec, CollectorTls, ListenerTls, TlsMode, UpstreamTls};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

/// A TLS problem in the config: which file, and what is wrong with it.
#[derive(Debug, Clone)]
pub struct TlsError {
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// What we know of one certificate file, for stats and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub path: String,
    pub subject: String,
    pub subject_alt_names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |m: String| TlsError {
        file: path.to_string(),
        message: m,
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in file".into()));
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError {
        file: path.to_string(),
        message: format!("cannot read private key: {e}"),
    })
}

fn load_roots(path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError {
            file: path.to_string(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn certified_key(
    spec: &CertificateSpec,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertInfo), TlsError> {
    let chain = load_certs(&spec.certificate_chain)?;
    let key = load_key(&spec.private_key)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError {
            file: spec.private_key.clone(),
            message: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(chain.clone(), signing);
    ck.keys_match().map_err(|e| TlsError {
        file: spec.private_key.clone(),
        message: format!(
            "private key does not match the certificate in {}: {e}",
            spec.certificate_chain
        ),
    })?;
    let info = cert_info(&spec.certificate_chain, &chain[0]);
    Ok((Arc::new(ck), info))
}

/// Subject, SANs ("DNS:…", "URI:…", "IP:…") and expiry of a certificate.
pub fn cert_info(path: &str, cert: &CertificateDer<'_>) -> CertInfo {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, x)) => CertInfo {
            path: path.to_string(),
            subject: x.subject().to_string(),
            subject_alt_names: verify::sans_of(&x)
                .into_iter()
                .map(|s| s.to_string())
                .collect(),
            not_after: x.validity().not_after.timestamp(),
        },
        Err(_) => CertInfo {
            path: path.to_string(),
            subject: String::new(),
            subject_alt_names: vec![],
            not_after: 0,
        },
    }
}

/// The peer's identity after a mutual-TLS handshake: its SANs, SPIFFE URIs included.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Vec::new();
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, x)) => verify::sans_of(&x)
            .into_iter()
            .map(|s| s.to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Chooses the listener certificate by SNI; the first one is the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            for (name, key) in &self.by_name {
                let hit = match name.strip_prefix("*.") {
                    Some(suffix) => {
                        sni.len() > suffix.len() + 1
                            && sni.ends_with(suffix)
                            && sni.as_bytes()[sni.len() - suffix.len() - 1] == b'.'
                    }
                    None => *name == sni,
                };
                if hit {
                    return Some(key.clone());
                }
            }
        }
        Some(self.default.clone())
    }
}

pub struct ServerTls {
    pub mode: TlsMode,
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub certs: Vec<CertInfo>,
}

impl ServerTls {
    pub fn build(spec: &ListenerTls) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let mut keys = Vec::new();
        let mut certs = Vec::new();
        for c in &spec.certificates {
            let (k, info) = certified_key(c, &provider)?;
            keys.push((c, k));
            certs.push(info);
        }
        let Some((_, default)) = keys.first().cloned() else {
            return Err(TlsError {
                file: String::new(),
                message: "a TLS listener needs a certificate".into(),
            });
        };
        let by_name = keys
            .iter()
            .flat_map(|(c, k)| {
                c.server_names
                    .iter()
                    .map(move |n| (n.to_ascii_lowercase(), k.clone()))
            })
            .collect();
        let resolver = Arc::new(SniResolver { default, by_name });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: String::new(),
                message: e.to_string(),
            })?;
        let builder = match &spec.validation {
            Some(v) => {
                let roots = load_roots(&v.trust)?;
                certs.extend(load_certs(&v.trust)?.iter().map(|c| cert_info(&v.trust, c)));
                let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots,
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError {
                    file: v.trust.clone(),
                    message: e.to_string(),
                })?;
                builder.with_client_cert_verifier(Arc::new(verify::SanClientVerifier::new(
                    inner,
                    v.subject_alternative_names.clone(),
                )))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = t;
        }
        Ok(ServerTls {
            mode: spec.mode,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }
}

/// The one client certificate a cluster presents (mutual TLS towards its upstreams).
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

pub struct ClientTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
    pub certs: Vec<CertInfo>,
}

impl ClientTls {
    /// `h2`: offer only "h2" by ALPN (HTTP/2 upstreams), else "http/1.1".
    pub fn build(spec: &UpstreamTls, h2: bool) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let server_name = ServerName::try_from(spec.server_name.clone()).map_err(|e| TlsError {
            file: String::new(),
            message: format!("bad server name {:?}: {e}", spec.server_name),
        })?;
        let mut certs = Vec::new();
        let verifier = match &spec.validation {
            None => verify::SanServerVerifier::new(None, Vec::new(), provider.clone()),
            Some(v) => {
                let roots = load_roots(&v.trust)?;
                certs.extend(load_certs(&v.trust)?.iter().map(|c| cert_info(&v.trust, c)));
                verify::SanServerVerifier::new(
                    Some(roots),
                    v.subject_alternative_names.clone(),
                    provider.clone(),
                )
            }
        };
        let verifier = Arc::new(verifier);
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: String::new(),
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &spec.certificate {
            Some(c) => {
                // Loaded and checked like a listener certificate (key matches the leaf), so a
                // half-written rotation is refused at reload, not at the next handshake.
                let (key, info) = certified_key(c, &provider)?;
                certs.push(info);
                builder.with_client_cert_resolver(Arc::new(ClientCertificate(key)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            certs,
        })
    }
}

/// Where the system's CA bundle is on the distributions we know (Debian/Ubuntu/Alpine, then
/// RHEL/Fedora), when a collector's `trust` is not given.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The span exporter's client config for an `https://` collector: the collector's certificate
/// verified (chain and name) against `trust` or the system's bundle; a client certificate
/// when given. Blocking use (`rustls::StreamOwned` on the exporter thread).
pub fn collector_config(
    spec: Option<&CollectorTls>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let trust = match spec.and_then(|s| s.trust.as_deref()) {
        Some(t) => t,
        None => SYSTEM_CA_BUNDLES
            .iter()
            .copied()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| TlsError {
                file: SYSTEM_CA_BUNDLES[0].to_string(),
                message: "no system CA bundle: give tracing.otlpTls.trust".into(),
            })?,
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certs(trust)?);
    if added == 0 {
        return Err(TlsError {
            file: trust.to_string(),
            message: "no usable CA certificate".into(),
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            file: String::new(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match spec.and_then(|s| s.certificate.as_ref()) {
        Some(c) => {
            let (key, _) = certified_key(c, &provider)?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod collector_tests {
    use super::*;

    #[test]
    fn a_collector_trust_that_cannot_be_read_is_named() {
        let spec = CollectorTls {
            trust: Some("/nonexistent/ca.pem".into()),
            certificate: None,
        };
        let e = collector_config(Some(&spec)).unwrap_err();
        assert_eq!(e.file, "/nonexistent/ca.pem", "{e}");
    }
}
