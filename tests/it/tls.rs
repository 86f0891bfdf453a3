//! A sidecar in front of an `https://` floor: events delivered and injects followed over
//! TLS (`wss://`), trusting the certificate through `SSL_CERT_FILE` as curl would.

use std::sync::Arc;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::sidecar::{Sidecar, inject, messages, prompt, wait_queued};
use crate::support::{Backend, Options, TestServer, eventually};

/// Terminates TLS for `localhost` with a fresh self-signed certificate and forwards each
/// connection to `upstream`; returns the port and the certificate's PEM.
async fn tls_proxy(upstream: String) -> (u16, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_and_follows_an_https_floor() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let (port, pem) = tls_proxy(srv.base.trim_start_matches("http://").to_owned()).await;
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("floor.pem");
    std::fs::write(&cert_file, pem).unwrap();
    let home = dir.path().join("polaris");
    let sc = Sidecar::start_env(
        &home,
        &format!("https://localhost:{port}"),
        &[("SSL_CERT_FILE", cert_file.as_path())],
    )
    .await;

    let session = sc.join("cc-1", "tls", "user:manu").await;
    let (s, v) = sc.post("/events", prompt("cc-1", "over TLS")).await;
    assert_eq!(s, 200, "{v}");
    eventually(30, || async {
        messages(&srv.base, "tls", &session)
            .await
            .iter()
            .any(|e| e["payload"]["prompt"] == "over TLS" && e["sender"] == "user:manu")
            .then_some(())
    })
    .await;

    // The inject stream is a wss:// WebSocket through the same certificate.
    inject(&srv.base, "tls", &session, "mind the index").await;
    wait_queued(&sc, "cc-1", 1).await;
    let (s, v) = sc.post("/events", prompt("cc-1", "next")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["pendingInjects"][0]["content"],
        json!("mind the index"),
        "{v}"
    );
    sc.stop().await;
    srv.finish().await;
}
