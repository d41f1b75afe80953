//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` describe it,
//! through rustls (with the `ring` provider, as the rest of ordo).
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable`, `allow`, `prefer`, absent | no | — |
//! | `require` | yes | not checked; with `sslrootcert`, its chain is (as `verify-ca`) |
//! | `verify-ca` | yes | its chain leads to a trusted CA |
//! | `verify-full` | yes | its chain, and that it is for the host connected to |
//!
//! The trusted CAs are those of the `sslrootcert` file (PEM) or, without
//! one, the system's; `sslrootcert=system` names the system's explicitly
//! and, as in libpq, asks for `verify-full`. `PGSSLROOTCERT` stands in for
//! a URL without `sslrootcert`.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector every connection to PostgreSQL is made with; whether it is
/// used at all is up to the connection's settings (see
/// [`TlsSettings::encrypts`]).
pub type Connector = MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// libpq tries without TLS first; ordo connects without.
    Allow,
    /// libpq tries TLS first; ordo connects without (as it always has).
    Prefer,
    /// TLS; the certificate is checked only when `sslrootcert` names a CA.
    Require,
    /// TLS; the certificate's chain must lead to a trusted CA.
    VerifyCa,
    /// TLS; the chain, and the certificate must be for the host name.
    VerifyFull,
}

impl SslMode {
    /// The mode a `sslmode` value names.
    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Its `sslmode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether connections in this mode use TLS.
    pub fn encrypts(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The operating system's trusted CAs (`sslrootcert=system`).
    System,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the connection is encrypted, but the server is not known to
    /// be the one meant.
    Nothing,
    /// That it is signed by a trusted CA (through any intermediates).
    Chain,
    /// That, and that it is for the host name (or IP address) connected to.
    ChainAndHostName,
}

/// A URL's TLS settings: its `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<RootCert>,
}

impl Default for TlsSettings {
    /// No TLS.
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
        }
    }
}

impl TlsSettings {
    /// The settings the values of `sslmode` and `sslrootcert` make (either
    /// may be absent), following libpq: `sslrootcert=system` asks for
    /// `verify-full`, which is also its default mode. The error says what is
    /// wrong, naming the parameter.
    pub fn from_params(
        sslmode: Option<&str>,
        sslrootcert: Option<&str>,
    ) -> Result<TlsSettings, String> {
        let root_cert = match sslrootcert {
            None | Some("") => None,
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
        };
        let mode = match sslmode {
            Some(value) => SslMode::parse(value).ok_or_else(|| {
                format!(
                    "sslmode {value:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )
            })?,
            None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslmode {mode} may not be used with sslrootcert=system (use verify-full)"
            ));
        }
        Ok(TlsSettings { mode, root_cert })
    }

    /// The `sslmode`.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Where the trusted CAs come from, when named.
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// Whether connections use TLS.
    pub fn encrypts(&self) -> bool {
        self.mode.encrypts()
    }

    /// What is checked of the server's certificate, when TLS is used.
    pub fn verification(&self) -> Option<Verification> {
        match self.mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => None,
            // libpq: a root certificate makes `require` act as `verify-ca`.
            SslMode::Require if self.root_cert.is_none() => Some(Verification::Nothing),
            SslMode::Require | SslMode::VerifyCa => Some(Verification::Chain),
            SslMode::VerifyFull => Some(Verification::ChainAndHostName),
        }
    }

    /// The trusted CAs, in words: "the CA in sslrootcert /etc/ca.pem".
    pub fn trusted(&self) -> String {
        match &self.root_cert {
            Some(RootCert::File(path)) => format!("the CA in sslrootcert {}", path.display()),
            Some(RootCert::System) => "a CA the system trusts (sslrootcert=system)".to_owned(),
            None => "a CA the system trusts (name the server's CA with sslrootcert)".to_owned(),
        }
    }

    /// The connector for these settings. It reads the `sslrootcert` file
    /// (or the system's CAs) now; the error names what could not be read.
    pub fn connector(&self) -> Result<Connector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verification() {
            None => Arc::new(Refuse {
                mode: self.mode,
                algorithms,
            }),
            Some(Verification::Nothing) => Arc::new(AcceptAny { algorithms }),
            Some(Verification::Chain) => Arc::new(ChainOnly {
                roots: Arc::new(self.roots()?),
                algorithms,
            }),
            Some(Verification::ChainAndHostName) => WebPkiServerVerifier::builder_with_provider(
                Arc::new(self.roots()?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("cannot check certificates: {e}"))?,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq offers; PostgreSQL 17 insists on it for direct TLS.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCert::File(path)) => {
                let shown = path.display();
                let pem = std::fs::read(path).map_err(|e| {
                    let reason = match e.kind() {
                        std::io::ErrorKind::NotFound => "no such file".to_owned(),
                        _ => crate::error::io_reason(&e),
                    };
                    format!("cannot read sslrootcert {shown}: {reason}")
                })?;
                let mut found = 0;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert
                        .map_err(|e| format!("sslrootcert {shown} is not PEM certificates: {e}"))?;
                    roots.add(cert).map_err(|e| {
                        format!("sslrootcert {shown} holds an unusable certificate: {e}")
                    })?;
                    found += 1;
                }
                if found == 0 {
                    return Err(format!(
                        "sslrootcert {shown} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)"
                    ));
                }
            }
            Some(RootCert::System) | None => {
                let loaded = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(loaded.certs);
                if roots.is_empty() {
                    return Err(
                        "no trusted CA certificates found on this system; name the server's CA with sslrootcert"
                            .to_owned(),
                    );
                }
            }
        }
        Ok(roots)
    }
}

/// The rustls error inside a connection error, if TLS is what failed.
pub fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut current = e.source();
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // tokio-rustls wraps it in an io::Error, whose source() skips it.
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

/// Why a TLS connection failed, in a few words, when it did; `None` for
/// other failures.
pub fn describe_failure(e: &tokio_postgres::Error, settings: &TlsSettings) -> Option<String> {
    if let Some(tls) = rustls_error(e) {
        return Some(describe_rustls(tls, settings));
    }
    let cause = e.source().map(|s| s.to_string()).unwrap_or_default();
    if cause.contains("server does not support TLS") {
        return Some("the server does not offer TLS (its ssl setting is off)".to_owned());
    }
    None
}

fn describe_rustls(e: &rustls::Error, settings: &TlsSettings) -> String {
    let rustls::Error::InvalidCertificate(cert) = e else {
        return format!("TLS handshake failed: {e}");
    };
    let why = match cert {
        CertificateError::UnknownIssuer => {
            format!("it is not signed by {}", settings.trusted())
        }
        CertificateError::NotValidForName => "it is not for the host connected to".to_owned(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let host = match expected {
                ServerName::DnsName(name) => name.as_ref().to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            };
            if presented.is_empty() {
                format!("it is not for host {host} (it names no host)")
            } else {
                let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
                format!("it is not for host {host} (it is for {})", names.join(", "))
            }
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".to_owned()
        }
        CertificateError::BadSignature => "its signature is invalid".to_owned(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not a certificate for TLS servers".to_owned()
        }
        other => other.to_string(),
    };
    format!("the server's certificate failed verification: {why}")
}

/// `localhost` for the `DnsName("localhost")` rustls reports, `127.0.0.1`
/// for `IpAddress(127.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    for (prefix, suffix) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = presented
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
        {
            return inner;
        }
    }
    presented
}

/// For modes without TLS: the connector is never asked to shake hands, and
/// refuses to if it were.
#[derive(Debug)]
struct Refuse {
    mode: SslMode,
    algorithms: WebPkiSupportedAlgorithms,
}

/// `require` without a root certificate: encrypted, the server unchecked
/// (libpq's meaning). The handshake's signatures are still verified.
#[derive(Debug)]
struct AcceptAny {
    algorithms: WebPkiSupportedAlgorithms,
}

/// `verify-ca`: the chain to a trusted CA, not the host name.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Refuse {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(format!(
            "TLS is not used with sslmode={}",
            self.mode
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for AcceptAny {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes_follow_libpq() {
        let settings =
            |mode: Option<&str>, root: Option<&str>| TlsSettings::from_params(mode, root).unwrap();
        assert_eq!(settings(None, None).verification(), None);
        assert_eq!(settings(Some("disable"), None).verification(), None);
        assert_eq!(settings(Some("allow"), None).verification(), None);
        assert_eq!(
            settings(Some("prefer"), Some("/ca.pem")).verification(),
            None
        );
        assert_eq!(
            settings(Some("require"), None).verification(),
            Some(Verification::Nothing)
        );
        assert_eq!(
            settings(Some("require"), Some("/ca.pem")).verification(),
            Some(Verification::Chain),
            "a root certificate makes require check the chain"
        );
        assert_eq!(
            settings(Some("verify-ca"), None).verification(),
            Some(Verification::Chain)
        );
        assert_eq!(
            settings(Some("verify-full"), Some("/ca.pem")).verification(),
            Some(Verification::ChainAndHostName)
        );
        assert_eq!(
            settings(None, Some("system")).mode(),
            SslMode::VerifyFull,
            "sslrootcert=system defaults to verify-full"
        );
        assert_eq!(
            settings(Some("require"), Some("")).root_cert(),
            None,
            "an empty sslrootcert names nothing"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = TlsSettings::from_params(Some("verify_full"), None).unwrap_err();
        assert!(err.contains("sslmode \"verify_full\""), "{err}");
        let err = TlsSettings::from_params(Some("require"), Some("system")).unwrap_err();
        assert!(err.contains("sslrootcert=system"), "{err}");
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn an_unreadable_root_certificate_is_named() {
        let settings =
            TlsSettings::from_params(Some("verify-full"), Some("/nonexistent/ca.pem")).unwrap();
        let err = settings.connector().map(|_| ()).unwrap_err();
        assert!(
            err.contains("cannot read sslrootcert /nonexistent/ca.pem: no such file"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("ordo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let settings = TlsSettings::from_params(Some("verify-ca"), not_pem.to_str()).unwrap();
        let err = settings.connector().map(|_| ()).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_in_certificates_read_plainly() {
        assert_eq!(bare_name("DnsName(\"db.example\")"), "db.example");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("something else"), "something else");
    }

    #[test]
    fn connectors_are_made_for_modes_that_need_no_file() {
        for mode in ["disable", "prefer", "require"] {
            let settings = TlsSettings::from_params(Some(mode), None).unwrap();
            assert!(settings.connector().is_ok(), "{mode}");
        }
    }
}
