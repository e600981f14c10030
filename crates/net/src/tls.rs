//! Optional TLS (rustls with the ring provider): server and client configurations from PEM
//! files, and the stream type both sides use whether or not TLS is on.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::NetError;

/// A byte stream: plain TCP or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Invalid(format!("{what}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::Invalid(format!("{what}: no certificate in it")));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|e| NetError::Invalid(format!("reading {}: {e}", path.display())))
}

/// A server configuration from a PEM certificate chain and its PEM private key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let chain = certs(cert_pem, "the server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| NetError::Invalid(format!("the server key: not a PEM private key: {e}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| NetError::Invalid(format!("the server certificate and key do not fit: {e}")))?;
    Ok(Arc::new(cfg))
}

/// [`server_config`] from files.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, NetError> {
    server_config(&read(cert)?, &read(key)?)
}

/// A client configuration trusting the PEM certificates of `ca_pem` (a private CA or the
/// server's self-signed certificate).
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "the CA file")? {
        roots.add(c).map_err(|e| NetError::Invalid(format!("the CA file: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// [`client_config`] from a file.
pub fn client_config_from_file(ca: &Path) -> Result<Arc<rustls::ClientConfig>, NetError> {
    client_config(&read(ca)?)
}

/// The name the client checks the server's certificate against.
pub fn server_name(name: &str) -> Result<ServerName<'static>, NetError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| NetError::Invalid(format!("TLS server name {name:?}: {e}")))
}
