//! Real certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost, a
//! client certificate, and a second, unrelated CA (for "wrong CA" tests).

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
}

/// Write the PEM files into `dir`.
pub fn generate_tls(dir: &Path) -> Result<TlsFiles> {
    std::fs::create_dir_all(dir)?;
    let issuer = ca("quorum test CA")?;
    let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
        let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
        p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (sc, sk) = leaf("etcd server", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (cc, ck) = leaf("root", ExtendedKeyUsagePurpose::ClientAuth)?;
    let other = ca("unrelated CA")?;
    let f = TlsFiles {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.crt"),
    };
    std::fs::write(&f.ca, issuer.pem())?;
    std::fs::write(&f.server_cert, sc)?;
    std::fs::write(&f.server_key, sk)?;
    std::fs::write(&f.client_cert, cc)?;
    std::fs::write(&f.client_key, ck)?;
    std::fs::write(&f.other_ca, other.pem())?;
    Ok(f)
}
