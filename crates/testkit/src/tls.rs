//! TLS fixtures: a throwaway certificate authority with a server certificate for
//! `localhost` and `127.0.0.1`, and a TLS-terminating proxy in front of a plain TCP
//! server (so a real HTTP server can be reached over `https://`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::TempDir;

/// A new CA and a server certificate it signed, as PEM files in a directory of their own.
#[derive(Debug)]
pub struct TestCa {
    /// The directory holding the files (removed on drop).
    pub dir: TempDir,
    /// The CA certificate (what a client must trust).
    pub ca_pem: PathBuf,
    /// The server certificate for `localhost` and `127.0.0.1`.
    pub cert_pem: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: PathBuf,
}

impl TestCa {
    /// Generates the CA and the server certificate (ECDSA P-256).
    pub fn new(label: &str) -> Self {
        let dir = TempDir::new(label);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("idempipe test CA {label}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign the server cert");

        let ca_pem = dir.join("ca.pem");
        let cert_pem = dir.join("server.pem");
        let key_pem = dir.join("server.key");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
        std::fs::write(&cert_pem, cert.pem()).expect("write server.pem");
        std::fs::write(&key_pem, key.serialize_pem()).expect("write server.key");
        Self {
            dir,
            ca_pem,
            cert_pem,
            key_pem,
        }
    }

    /// A TLS acceptor presenting the server certificate (rustls with ring).
    pub fn acceptor(&self) -> TlsAcceptor {
        let certs = CertificateDer::pem_file_iter(&self.cert_pem)
            .expect("read server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse server.pem");
        let key = PrivateKeyDer::from_pem_file(&self.key_pem).expect("read server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A TLS-terminating proxy on 127.0.0.1 forwarding every connection to a plain TCP
/// `upstream`; stops when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    /// Where clients connect with TLS.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Starts the proxy (inside a Tokio runtime) with `ca`'s server certificate.
    pub async fn start(upstream: SocketAddr, ca: &TestCa) -> Self {
        let acceptor = ca.acceptor();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
