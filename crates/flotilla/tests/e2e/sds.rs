//! Listener certificates from an SDS server (Envoy Gateway's `gateway.envoyproxy.io/sds`
//! Secret): a real SDS server on a unix socket hands the real Envoy the certificate; a TLS
//! client is served exactly that certificate and its request is routed.

use crate::standalone::{Standalone, T};
use crate::support::*;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves one TLS certificate, named `server-cert`, over state-of-the-world SDS.
struct Sds {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// How many times Envoy asked for it.
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("state-of-the-world only"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let inline = |b: &[u8]| DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(b.to_vec())),
            ..Default::default()
        };
        let secret = Secret {
            name: "server-cert".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&self.cert)),
                private_key: Some(inline(&self.key)),
                ..Default::default()
            })),
        };
        let asked = self.asked.clone();
        tokio::spawn(async move {
            // Answer the first request for the name; later ones are ACKs.
            let mut sent = false;
            while let Ok(Some(req)) = inbound.message().await {
                if sent || !req.resource_names.iter().any(|n| n == "server-cert") {
                    continue;
                }
                sent = true;
                asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let resp = DiscoveryResponse {
                    version_info: "1".into(),
                    resources: vec![Any {
                        type_url: SECRET_TYPE.into(),
                        value: secret.encode_to_vec(),
                    }],
                    type_url: SECRET_TYPE.into(),
                    nonce: "1".into(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("streaming only"))
    }
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Accepts exactly one server certificate (DER), whatever signed it.
#[derive(Debug)]
pub struct Pinned(pub Vec<u8>);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the SDS certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// GET `path` over TLS with SNI `host`; the raw HTTP/1.1 response.
pub async fn https_get(
    port: u16,
    host: &str,
    path: &str,
    cert_der: &[u8],
) -> Result<String, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(Pinned(cert_der.to_vec())))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// [`https_get`] until the answer is a 200; the whole response.
pub async fn https_ok(what: &str, port: u16, host: &str, path: &str, cert_der: &[u8]) -> String {
    eventually(what, T, || async {
        let r = https_get(port, host, path, cert_der).await?;
        if r.starts_with("HTTP/1.1 200") {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await
}

/// The DER bytes of the first certificate of a PEM file.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    pem_block(pem, "CERTIFICATE")
}

/// The DER bytes of the first PEM block labelled `label` ("CERTIFICATE", "PRIVATE KEY").
pub fn pem_block(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let b64: String = pem
        .lines()
        .skip_while(|l| l.trim() != begin)
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in b64.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// A self-signed EC certificate for `host` made by openssl in `dir`: (cert PEM, key PEM).
pub fn self_signed(dir: &std::path::Path, host: &str) -> (Vec<u8>, Vec<u8>) {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .arg("-keyout")
        .arg(dir.join(format!("{host}.key")))
        .arg("-out")
        .arg(dir.join(format!("{host}.crt")))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read(dir.join(format!("{host}.crt"))).expect("certificate"),
        std::fs::read(dir.join(format!("{host}.key"))).expect("key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificate_comes_from_an_sds_server() {
    let s = Standalone::start();
    let dir = s.dir.path();
    // A certificate only the SDS server knows.
    let (cert, key) = self_signed(dir, "sds.example.com");
    let cert_der = pem_to_der(&String::from_utf8_lossy(&cert));

    let socket = dir.join("sds.sock");
    let uds = tokio::net::UnixListener::bind(&socket).expect("bind SDS socket");
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = SecretDiscoveryServiceServer::new(Sds {
        cert,
        key,
        asked: asked.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(uds)),
    );

    let backend = start_backend("v1").await;
    let port = free_port();
    let url = format!("unix://{}", socket.display());
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{CLASS_YAML}apiVersion: v1
kind: Secret
metadata: {{name: from-sds, namespace: default}}
type: gateway.envoyproxy.io/sds
data: {{url: {}, secretName: {}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: flotilla
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: https
    port: {port}
    protocol: HTTPS
    hostname: sds.example.com
    tls: {{certificateRefs: [{{name: from-sds}}]}}
---
{}---
{}",
            base64(url.as_bytes()),
            base64(b"server-cert"),
            service_yaml("default", "v1", backend),
            route_yaml("default", "app", "gw", "/", &[("v1", 1)])
        ),
    );
    let (_envoy, _) = start_envoy(
        dir,
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let answer = https_ok(
        "the route over TLS with the SDS certificate",
        port,
        "sds.example.com",
        "/x",
        &cert_der,
    )
    .await;
    assert!(answer.ends_with("backend=v1 path=/x"), "{answer}");
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let v = s
        .api("/api/v1/resources/local/Gateway/default/gw")
        .await
        .expect("gateway");
    let conds = v["object"]["status"]["listeners"][0]["conditions"].to_string();
    assert!(conds.contains("\"Programmed\""), "{conds}");
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
