//! TLS with certificates that rotate on disk.
//!
//! The serving certificate is looked up per handshake through a resolver, so swapping it never
//! touches connections already open: requests in flight finish on the certificate they started
//! with. A reload happens only when the cert and key files both parse and belong together;
//! otherwise the old pair keeps serving (a half-written pair during rotation is normal).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path} holds no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// The certificate and key files, and what was loaded from them.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    loaded: (Vec<u8>, Vec<u8>),
}

impl Certificates {
    /// Loads the pair once; the server cannot start without it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_pair(cert_path, key_path)?;
        let key = certified_key(&provider, cert_path, key_path, &files)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            resolver: Arc::new(CertResolver { current: RwLock::new(Arc::new(key)) }),
            loaded: files,
        })
    }

    /// A rustls server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1, this pair's resolver.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Rereads the files; swaps the certificate when they changed and make a valid pair.
    /// `Ok(true)` when a new certificate is now served.
    pub fn reload(&mut self) -> Result<bool, Error> {
        let files = read_pair(&self.cert_path, &self.key_path)?;
        if files == self.loaded {
            return Ok(false);
        }
        let key = certified_key(&self.provider, &self.cert_path, &self.key_path, &files)?;
        *self.resolver.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        self.loaded = files;
        Ok(true)
    }

    /// Rereads the files every `interval`, forever, reporting each outcome to `on_reload`.
    pub async fn watch(mut self, interval: Duration, on_reload: impl Fn(&Result<bool, Error>)) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        loop {
            ticks.tick().await;
            let outcome = self.reload();
            match &outcome {
                Ok(true) => {
                    tracing::info!(cert = %self.cert_path.display(), "serving a new TLS certificate");
                    last_error.clear();
                }
                Ok(false) => {}
                Err(e) => {
                    // Rotation writes two files; say so once per distinct problem, not every tick.
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(error = %msg, "keeping the current TLS certificate");
                        last_error = msg;
                    }
                }
            }
            on_reload(&outcome);
        }
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| Error::Read { path: p.to_owned(), source });
    Ok((read(cert)?, read(key)?))
}

fn certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate { path: cert_path.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(Error::Certificate { path: cert_path.to_owned(), reason: "no CERTIFICATE block".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Key { path: key_path.to_owned(), reason: e.to_string() })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Key { path: key_path.to_owned(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| Error::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(certified)
}
