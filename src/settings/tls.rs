//! TLS material: the private CA to trust and the client certificate (mTLS), judged from the
//! file contents loading read. A file the TLS client would refuse is a bad setting here, at
//! start-up, rather than a handshake failure on every reconnect.

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::raw::RawSettings;
use super::SettingsError;

/// A client certificate chain and its private key, both PEM (`REDIS_TLS_CERT_FILE`,
/// `REDIS_TLS_KEY_FILE`).
#[derive(Clone)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// The private key. Never printed.
    pub key: Vec<u8>,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert_bytes", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The one line saying when the TLS files may be set.
const ONLY_WITH_TLS: &str =
    "to be set only with a rediss:// REDIS_URL, REDIS_TLS=true or REDIS_SENTINEL_TLS=true";

/// The private CA named by `tls_ca_file`: only with TLS (`uses_tls`), readable, and holding
/// certificates.
pub(super) fn root_cert(
    raw: &RawSettings,
    uses_tls: bool,
) -> Result<Option<Vec<u8>>, SettingsError> {
    let Some(path) = raw.get("tls_ca_file") else {
        return Ok(None);
    };
    if !uses_tls {
        return Err(SettingsError::invalid("tls_ca_file", path, ONLY_WITH_TLS));
    }
    let Some(pem) = raw.file("tls_ca_file", "PEM file")? else {
        return Ok(None);
    };
    check_trust_anchors(pem).map_err(|why| {
        let expected = format!("a PEM file of CA certificates ({why})");
        SettingsError::invalid("tls_ca_file", path, expected)
    })?;
    Ok(Some(pem.to_vec()))
}

/// The client certificate and key: both or neither, only with TLS, and a key that belongs to
/// the certificate.
pub(super) fn client_cert(
    raw: &RawSettings,
    uses_tls: bool,
) -> Result<Option<ClientCert>, SettingsError> {
    let (cert_path, key_path) = match (raw.get("tls_cert_file"), raw.get("tls_key_file")) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            let expected = "to be set together with REDIS_TLS_KEY_FILE";
            return Err(SettingsError::invalid("tls_cert_file", c, expected));
        }
        (None, Some(k)) => {
            let expected = "to be set together with REDIS_TLS_CERT_FILE";
            return Err(SettingsError::invalid("tls_key_file", k, expected));
        }
    };
    if !uses_tls {
        return Err(SettingsError::invalid(
            "tls_cert_file",
            cert_path,
            ONLY_WITH_TLS,
        ));
    }
    let cert = raw.file("tls_cert_file", "PEM file")?.unwrap_or_default();
    let key = raw.file("tls_key_file", "PEM file")?.unwrap_or_default();
    let chain = parse_chain(cert).map_err(|why| {
        let expected = format!("a PEM file of the client certificate chain ({why})");
        SettingsError::invalid("tls_cert_file", cert_path, expected)
    })?;
    let private_key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        let expected = format!("a PEM file of the client's private key ({e})");
        SettingsError::invalid("tls_key_file", key_path, expected)
    })?;
    check_pair(chain, private_key).map_err(|why| {
        let expected = format!("the private key of REDIS_TLS_CERT_FILE's certificate ({why})");
        SettingsError::invalid("tls_key_file", key_path, expected)
    })?;
    Ok(Some(ClientCert {
        cert: cert.to_vec(),
        key: key.to_vec(),
    }))
}

/// Parse `pem` as trust anchors the way the TLS client will, so a bad file is a bad setting.
fn check_trust_anchors(pem: &[u8]) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        store.add(cert).map_err(|e| e.to_string())?;
    }
    if store.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(())
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(chain)
}

/// Build a client configuration with the pair, as the TLS client will: rustls refuses a key
/// it cannot use, or one that does not match the certificate.
fn check_pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
