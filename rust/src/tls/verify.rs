//! Certificate verifiers: webpki chain validation plus App Mesh's exact SAN rules.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Uri(String),
    Ip(String),
}

impl San {
    pub fn value(&self) -> &str {
        match self {
            San::Dns(s) | San::Uri(s) | San::Ip(s) => s,
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(s) => write!(f, "DNS:{s}"),
            San::Uri(s) => write!(f, "URI:{s}"),
            San::Ip(s) => write!(f, "IP:{s}"),
        }
    }
}

pub fn sans_of(x: &x509_parser::certificate::X509Certificate<'_>) -> Vec<San> {
    let mut out = Vec::new();
    if let Ok(Some(ext)) = x.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => out.push(San::Dns(d.to_string())),
                GeneralName::URI(u) => out.push(San::Uri(u.to_string())),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                        _ => continue,
                    };
                    out.push(San::Ip(ip));
                }
                _ => {}
            }
        }
    }
    out
}

/// Whether the certificate carries one of `wanted` as a SAN (exact, no wildcards: App Mesh).
fn has_san(cert: &CertificateDer<'_>, wanted: &[String]) -> bool {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, x)) => sans_of(&x)
            .iter()
            .any(|s| wanted.iter().any(|w| w == s.value())),
        Err(_) => false,
    }
}

/// Client certificates: chain to the trust bundle, then (if any are listed) carry a listed SAN.
#[derive(Debug)]
pub struct SanClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl SanClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, sans: Vec<String>) -> Self {
        SanClientVerifier { inner, sans }
    }
}

impl ClientCertVerifier for SanClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.sans.is_empty() && !has_san(end_entity, &self.sans) {
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server certificates: chain to the trust bundle; then the listed SANs, or (none listed)
/// the server name we dialled (App Mesh's default SAN rule). Without a trust bundle the
/// certificate is not verified at all (App Mesh: a file certificate on the server and no
/// client policy); handshake signatures are checked either way.
#[derive(Debug)]
pub struct SanServerVerifier {
    roots: Option<Arc<RootCertStore>>,
    sans: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl SanServerVerifier {
    pub fn new(
        roots: Option<Arc<RootCertStore>>,
        sans: Vec<String>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        SanServerVerifier {
            roots,
            sans,
            provider,
        }
    }
}

impl ServerCertVerifier for SanServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.sans.is_empty() {
            rustls::client::verify_server_name(&parsed, server_name)?;
        } else if !has_san(end_entity, &self.sans) {
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
