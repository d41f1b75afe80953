//! Certificates for TLS tests: a certificate authority of the test's own,
//! and server certificates it issues, written to PEM files in a temporary
//! directory that lives as long as the authority.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::postgres::TlsFiles;

/// A certificate authority (ECDSA P-256), its certificate in `ca.pem`.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    issued: AtomicUsize,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TestCa").field(&self.cert_file()).finish()
    }
}

impl TestCa {
    /// A new authority whose certificate names it `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("ordo-ca-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory for certificates: {e}"));
        write(&dir.path().join("ca.pem"), &cert.pem());
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            issued: AtomicUsize::new(0),
        }
    }

    /// The authority's certificate (PEM): what `sslrootcert` names.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (host names and IP addresses, the
    /// first also its common name) and its key, valid for server
    /// authentication.
    pub fn issue(&self, names: &[&str]) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("certificate names {names:?}: {e}"));
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("server certificate: {e}"));
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let files = TlsFiles {
            cert: self.dir.path().join(format!("server-{n}.crt")),
            key: self.dir.path().join(format!("server-{n}.key")),
        };
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
