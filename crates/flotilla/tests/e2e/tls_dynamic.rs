//! A TLSRoute to an Envoy Gateway DynamicResolver Backend through the real Envoy: the TLS
//! passthrough listener resolves the client's server name (SNI) through DNS and passes the
//! connection, untouched, to that host; the client completes its handshake with the backend.

use crate::sds::{https_ok, pem_block, pem_to_der, self_signed};
use crate::standalone::Standalone;
use crate::support::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS server on 127.0.0.1:0 answering every request with `backend=tls`; its port.
async fn tls_backend(cert_pem: &[u8], key_pem: &[u8]) -> u16 {
    let cert =
        rustls::pki_types::CertificateDer::from(pem_to_der(&String::from_utf8_lossy(cert_pem)));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        pem_block(&String::from_utf8_lossy(key_pem), "PRIVATE KEY").into(),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS backend");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = "backend=tls";
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_route_to_a_dynamic_resolver_passes_through_to_the_sni_host() {
    let s = Standalone::start();
    let (cert, key) = self_signed(s.dir.path(), "localhost");
    let cert_der = pem_to_der(&String::from_utf8_lossy(&cert));
    let backend = tls_backend(&cert, &key).await;
    let port = free_port();
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{CLASS_YAML}apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: flotilla
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: tls, port: {port}, protocol: TLS, tls: {{mode: Passthrough}}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: anywhere, namespace: default}}
spec: {{type: DynamicResolver}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: dyn, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [localhost]
  rules:
  - backendRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: anywhere, port: {backend}}}]
"
        ),
    );
    let (_envoy, _) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    // The handshake completes with the backend's own certificate: Envoy did not terminate it.
    let answer = https_ok(
        "TLS passthrough to the SNI host",
        port,
        "localhost",
        "/",
        &cert_der,
    )
    .await;
    assert!(answer.ends_with("backend=tls"), "{answer}");
    let v = s
        .api("/api/v1/resources/local/TLSRoute/default/dyn")
        .await
        .expect("route");
    let conds = v["object"]["status"]["parents"][0]["conditions"].to_string();
    assert!(conds.contains("\"ResolvedRefs\""), "{conds}");
    assert!(!conds.contains("\"False\""), "{conds}");
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
