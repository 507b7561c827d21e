//! Throwaway certificates for the demo and the tests, generated with rcgen
//! at run time (no key is ever committed): a CA, and leaf certificates it
//! signs for nodes (a DNS subject alternative name per region, plus
//! `127.0.0.1`) and operators. Not for production: a real cluster's CA key
//! lives offline (see the README's "Securing a cluster").

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf's files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate, PEM file.
    pub cert: PathBuf,
    /// Its key, PEM file.
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem)?;
        Ok(path)
    }

    /// Issues a leaf for `names` (DNS names, or IP addresses), valid now
    /// (or expired a day ago with `expired`), written to `dir/STEM.pem`
    /// and `dir/STEM.key`.
    pub fn leaf(&self, dir: &Path, stem: &str, names: &[&str], expired: bool) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, stem);
        let now = OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - Duration::days(30);
            params.not_after = now - Duration::days(1);
        } else {
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(30);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let leaf = Leaf {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem())?;
        std::fs::write(&leaf.key, key.serialize_pem())?;
        Ok(leaf)
    }
}
