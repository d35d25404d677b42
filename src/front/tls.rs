//! HTTPS for the front (`tls-cert`, `tls-key`): rustls with the ring provider, TLS 1.2 and 1.3,
//! HTTP/1.1 over ALPN. The files are read once, at start; a certificate renewal needs a restart
//! of the daemon (or a reverse proxy that terminates TLS, see the README).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The acceptor for a PEM certificate chain and its PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::other(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| bad("cannot read the certificate chain", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", cert, &"expected PEM `CERTIFICATE` blocks"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read the private key", key, &e))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::other(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
