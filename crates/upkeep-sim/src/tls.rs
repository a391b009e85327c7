//! TLS for the simulators: a throwaway certificate authority and a server certificate for
//! 127.0.0.1 and localhost, made fresh at start (or kept in a state directory). The Kubernetes
//! emulator needs it because kubectl, like every client-go program, sends a bearer token only
//! over TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A certificate authority's certificate and a server certificate chain with its key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCerts {
    pub ca_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl SimCerts {
    /// A new CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
    pub fn generate() -> Result<SimCerts, String> {
        let e = |e: rcgen::Error| format!("cannot make the simulator's certificate: {e}");
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "upkeep simulator CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(e)?;
        let key = KeyPair::generate().map_err(e)?;
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(e)?;
        p.distinguished_name.push(DnType::CommonName, "upkeep-sim");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca).map_err(e)?;
        Ok(SimCerts {
            ca_pem: ca.pem(),
            chain_pem: format!("{}{}", cert.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Load from `dir` (ca.crt, tls.crt, tls.key), or make new ones and save them there.
    pub fn load_or_generate(dir: &Path) -> Result<SimCerts, String> {
        let read = |n: &str| std::fs::read_to_string(dir.join(n));
        if let (Ok(ca_pem), Ok(chain_pem), Ok(key_pem)) =
            (read("ca.crt"), read("tls.crt"), read("tls.key"))
        {
            return Ok(SimCerts {
                ca_pem,
                chain_pem,
                key_pem,
            });
        }
        let c = SimCerts::generate()?;
        let w = |n: &str, s: &str| {
            super::kube::write_private(&dir.join(n), s.as_bytes())
                .map_err(|e| format!("{}: {e}", dir.join(n).display()))
        };
        w("ca.crt", &c.ca_pem)?;
        w("tls.crt", &c.chain_pem)?;
        w("tls.key", &c.key_pem)?;
        Ok(c)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the simulator's certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("the simulator's key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("the simulator's certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS listener for `axum::serve`: handshakes run concurrently, and a failed or slow one
/// never holds up the others.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = hs.await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { rx, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept loop is gone (the runtime is shutting down): wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
