//! ClientTrafficPolicy through `flotilla standalone` and a real Envoy: the settings are in the
//! listener Envoy runs (its admin config_dump), and they act on real connections.

use crate::standalone::{Standalone, T};
use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP backend answering, once it has the whole request body, with the client address
/// headers Envoy sent it.
async fn echo_backend() -> u16 {
    let app =
        axum::Router::new().fallback(|headers: axum::http::HeaderMap, _body: String| async move {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            format!(
                "external={} xff={}",
                h("x-envoy-external-address"),
                h("x-forwarded-for")
            )
        });
    serve("127.0.0.1", 0, app).await.expect("bind backend")
}

fn policy_yaml(spec: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: client, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
{spec}"
    )
}

/// Standalone with a gateway on a free port, a route `/app` to `backend`, the policy `spec`,
/// and an Envoy; returns (standalone, envoy, gateway port, Envoy admin port) once `/app`
/// answers through Envoy.
async fn setup(spec: &str, backend: u16) -> (Standalone, Proc, u16, u16) {
    let s = Standalone::start();
    let port = free_port();
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "web", backend),
            route_yaml("default", "app", "gw", "/app", &[("web", 1)]),
            policy_yaml(spec)
        ),
    );
    let (envoy, admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    s.expect(
        &format!("http://127.0.0.1:{port}/app"),
        "the route through Envoy",
        |c, _| c == 200,
    )
    .await;
    (s, envoy, port, admin)
}

/// The policy's status, once it has one.
async fn policy_status(s: &Standalone) -> Value {
    eventually("the policy status", T, || async {
        let v = s
            .api("/api/v1/resources/local/ClientTrafficPolicy/default/client")
            .await?;
        let st = &v["object"]["status"];
        if st["ancestors"].is_array() {
            Ok(st.clone())
        } else {
            Err(v.to_string())
        }
    })
    .await
}

/// The active state of Envoy listener `name` from the admin config_dump, once Envoy runs it
/// (a listener Envoy rejected is never active).
async fn active_listener(admin: u16, name: &str) -> Value {
    let c = client();
    eventually(&format!("listener {name} active in Envoy"), T, || async {
        let dump = config_dump(&c, admin, "dynamic_listeners").await?;
        active_listeners(&dump)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a["listener"].clone())
            .ok_or_else(|| dump.to_string())
    })
    .await
}

/// The HTTP connection manager of the listener's first filter chain, in config_dump JSON.
fn hcm(listener: &Value) -> Value {
    listener["filter_chains"][0]["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .map(|f| f["typed_config"].clone())
        .unwrap_or(Value::Null)
}

/// A JSON integer Envoy may print as a number or (64-bit) as a string.
fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_keepalive_and_buffer_limit_reach_envoy() {
    let backend = echo_backend().await;
    let (s, _envoy, port, admin) = setup(
        "  timeout: {http: {requestReceivedTimeout: 1s, idleTimeout: 30s, streamIdleTimeout: 45s}}
  tcpKeepalive: {probes: 3, idleTime: 1m, interval: 10s}
  connection: {bufferLimit: 64Ki, connectionLimit: {value: 50}}
",
        backend,
    )
    .await;
    let l = active_listener(admin, &format!("http-{port}")).await;
    let m = hcm(&l);
    assert_eq!(m["request_timeout"], "1s", "{m}");
    assert_eq!(m["stream_idle_timeout"], "45s", "{m}");
    assert_eq!(
        m["common_http_protocol_options"]["idle_timeout"], "30s",
        "{m}"
    );
    assert_eq!(l["per_connection_buffer_limit_bytes"], 65536, "{l}");
    let opts: Vec<(i64, i64, i64)> = l["socket_options"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                int(&o["level"]).unwrap_or(-1),
                int(&o["name"]).unwrap_or(-1),
                int(&o["int_value"]).unwrap_or(-1),
            )
        })
        .collect();
    // SO_KEEPALIVE on, then TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL.
    assert_eq!(opts, [(1, 9, 1), (6, 6, 3), (6, 4, 60), (6, 5, 10)], "{l}");
    assert_eq!(
        l["filter_chains"][0]["filters"][0]["name"], "envoy.filters.network.connection_limit",
        "{l}"
    );

    // The request timeout acts: a request whose body never comes (the backend waits for it)
    // is answered 408 after ~1s.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to Envoy");
    let started = Instant::now();
    conn.write_all(b"POST /app HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("Envoy answered within 10s")
        .expect("read");
    let waited = started.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );

    let st = policy_status(&s).await;
    assert!(st.to_string().contains("\"Accepted\""), "{st}");
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_from_trusted_hops_and_a_health_check_path() {
    let backend = echo_backend().await;
    let (s, _envoy, port, admin) = setup(
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 2}}
  healthCheck: {path: /healthz}
",
        backend,
    )
    .await;
    let l = active_listener(admin, &format!("http-{port}")).await;
    assert_eq!(hcm(&l)["xff_num_trusted_hops"], 2, "{l}");

    // Two trusted hops: the client is the second address from the right of what the
    // client sent (not the proxy that sent it, 198.51.100.9, nor Envoy's peer).
    let c = client();
    let r = c
        .get(format!("http://127.0.0.1:{port}/app"))
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.9")
        .send()
        .await
        .expect("request through Envoy");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(
        body.starts_with("external=203.0.113.7 "),
        "the backend saw {body}"
    );
    // Envoy appends the peer it saw (no space after its comma).
    assert!(body.contains("xff=203.0.113.7, 198.51.100.9,"), "{body}");

    // Envoy answers the health check path itself; no route serves it.
    let (code, body) = get(&c, &format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("health check");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("external="), "{body}");
    let (code, _) = get(&c, &format!("http://127.0.0.1:{port}/other"))
        .await
        .expect("other path");
    assert_eq!(code, 404);

    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// A CA, a server certificate for `a.example.com` and a client certificate, both issued by it.
struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_pem: String,
    server_key_pem: String,
    client_der: Vec<u8>,
    client_key_der: Vec<u8>,
    /// A second client certificate of the CA, revoked by `crl_pem`.
    revoked_der: Vec<u8>,
    revoked_key_der: Vec<u8>,
    crl_pem: String,
}

fn pki() -> Pki {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
        DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevokedCertParams, SerialNumber,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ctp test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["a.example.com".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let client_cert = |serial: u64| {
        let key = KeyPair::generate().expect("client key");
        let mut params =
            CertificateParams::new(vec!["client.example.com".to_string()]).expect("client params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &issuer).expect("client certificate");
        (cert, key)
    };
    let (client, client_key) = client_cert(1);
    let (revoked, revoked_key) = client_cert(2);
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(2u64),
            revocation_time: date_time_ymd(2020, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("CRL");
    Pki {
        revoked_der: revoked.der().to_vec(),
        revoked_key_der: revoked_key.serialize_der(),
        crl_pem: crl.pem().expect("CRL PEM"),
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        server_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_der: client.der().to_vec(),
        client_key_der: client_key.serialize_der(),
    }
}

/// GET `/app` from `a.example.com` over TLS (trusting `pki`'s CA), with the client
/// certificate if `with_cert`, offering only TLS 1.2 if `tls12`: the raw response, or why
/// there was none.
async fn https_app(port: u16, pki: &Pki, with_cert: bool, tls12: bool) -> Result<String, String> {
    let cert = with_cert.then(|| (pki.client_der.clone(), pki.client_key_der.clone()));
    https_app_as(port, pki, cert, tls12).await
}

/// [`https_app`] with client certificate `cert` (DER certificate, PKCS#8 DER key), if any.
async fn https_app_as(
    port: u16,
    pki: &Pki,
    cert: Option<(Vec<u8>, Vec<u8>)>,
    tls12: bool,
) -> Result<String, String> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(pki.ca_der.clone()))
        .map_err(|e| e.to_string())?;
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match cert {
        Some((der, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(der)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from("a.example.com").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.write_all(b"GET /app HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer in 5s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A Gateway with an HTTPS listener for `a.example.com` on `port` serving `pki`'s server
/// certificate, the Secrets `client-ca` with `pki`'s CA and `client-crl` with its CRL, and a
/// route `/app` to `backend`.
fn https_gateway_yaml(port: u16, pki: &Pki, backend: u16) -> String {
    let b64 = |s: &str| crate::sds::base64(s.as_bytes());
    format!(
        "{CLASS_YAML}apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: flotilla
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: https, port: {port}, protocol: HTTPS, hostname: a.example.com, tls: {{certificateRefs: [{{name: server}}]}}, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: server, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {}, tls.key: {}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: client-ca, namespace: default}}
data: {{ca.crt: {}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: client-crl, namespace: default}}
data: {{ca.crl: {}}}
---
{}---
{}",
        b64(&pki.server_pem),
        b64(&pki.server_key_pem),
        b64(&pki.ca_pem),
        b64(&pki.crl_pem),
        service_yaml("default", "web", backend),
        route_yaml("default", "app", "gw", "/app", &[("web", 1)]),
    )
}

/// Standalone with [`https_gateway_yaml`] on a free port (to a new backend `web`) and `policy`
/// (a YAML document), and an Envoy; (standalone, envoy, gateway port, Envoy admin port).
async fn https_setup(pki: &Pki, policy: &str) -> (Standalone, Proc, u16, u16) {
    let s = Standalone::start();
    let backend = start_backend("web").await;
    let port = free_port();
    write_file(&s.yaml, "all.yaml", &https_gateway_yaml(port, pki, backend));
    write_file(&s.yaml, "policy.yaml", policy);
    let (envoy, admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    (s, envoy, port, admin)
}

/// Polls the raw HTTPS exchange `f` until its response starts with `status` (a status line);
/// the response.
async fn answers<F, Fut>(what: &str, status: &str, mut f: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    eventually(what, T, || {
        let r = f();
        async move {
            let r = r.await?;
            if r.starts_with(status) {
                Ok(r)
            } else {
                Err(r)
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_tls_parameters_apply() {
    let pki = pki();
    let policy = |ca: &str| {
        policy_yaml(&format!(
            "  tls: {{minVersion: '1.3', clientValidation: {{caCertificateRefs: [{{name: {ca}}}]}}}}\n"
        ))
    };
    let (s, _envoy, port, admin) = https_setup(&pki, &policy("client-ca")).await;
    // With the client certificate: served.
    let ok = answers("the route over mutual TLS", "HTTP/1.1 200", || {
        https_app(port, &pki, true, false)
    })
    .await;
    assert!(ok.ends_with("backend=web path=/app"), "{ok}");
    let l = active_listener(admin, &format!("tcp-{port}")).await;
    let tls = &l["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true, "{l}");
    assert_eq!(
        tls["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"], "TLSv1_3",
        "{l}"
    );

    // Without one: refused (during the handshake, or by an alert on the first read).
    match https_app(port, &pki, false, false).await {
        Ok(r) => assert!(
            !r.contains("200"),
            "served without a client certificate: {r}"
        ),
        Err(e) => assert!(e.contains("TLS handshake") || e.contains("read"), "{e}"),
    }
    // TLS 1.2 is below the policy's minimum: no handshake.
    let e = https_app(port, &pki, true, true)
        .await
        .expect_err("served over TLS 1.2");
    assert!(e.contains("TLS handshake"), "{e}");

    // The policy names a CA that does not exist: it is Invalid, and the listener fails
    // closed (its routes answer 500) rather than serve without client validation.
    write_file(&s.yaml, "policy.yaml", &policy("missing-ca"));
    answers(
        "routes answering 500 without the policy",
        "HTTP/1.1 500",
        || https_app(port, &pki, false, false),
    )
    .await;
    let st = policy_status(&s).await;
    assert!(
        st.to_string().contains(
            "failed to get certificate from ref: secret default/missing-ca does not exist"
        ),
        "{st}"
    );

    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// `clientValidation.crl`: Envoy refuses a client certificate the CRL revokes and serves one
/// it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused() {
    let pki = pki();
    let (s, _envoy, port, admin) = https_setup(
        &pki,
        &policy_yaml(
            "  tls: {clientValidation: {caCertificateRefs: [{name: client-ca}], crl: {refs: [{name: client-crl}]}}}\n",
        ),
    )
    .await;
    let good = || {
        https_app_as(
            port,
            &pki,
            Some((pki.client_der.clone(), pki.client_key_der.clone())),
            false,
        )
    };
    let ok = answers(
        "the route for a certificate the CRL does not revoke",
        "HTTP/1.1 200",
        good,
    )
    .await;
    assert!(ok.ends_with("backend=web path=/app"), "{ok}");
    // The CRL is in the listener's validation context.
    let l = active_listener(admin, &format!("tcp-{port}")).await;
    let v = &l["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
        ["validation_context"];
    assert!(v["crl"].is_object(), "{l}");
    // The revoked certificate: refused (during the handshake, or by an alert on the first read).
    let revoked = https_app_as(
        port,
        &pki,
        Some((pki.revoked_der.clone(), pki.revoked_key_der.clone())),
        false,
    )
    .await;
    match revoked {
        Ok(r) => assert!(!r.contains("200"), "served a revoked certificate: {r}"),
        Err(e) => assert!(e.contains("TLS handshake") || e.contains("read"), "{e}"),
    }
    // And the good one still is served.
    assert!(good().await.unwrap().starts_with("HTTP/1.1 200"));
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// Trusted CIDRs go through Envoy's XFF original IP detection extension (a field the
/// generated protobuf types predate): Envoy reads it back as `xff_trusted_cidrs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_cidrs_reach_envoys_xff_extension() {
    let backend = echo_backend().await;
    let (s, _envoy, port, admin) = setup(
        "  clientIPDetection: {xForwardedFor: {trustedCIDRs: [10.0.0.0/8, '2001:db8::/32']}}\n",
        backend,
    )
    .await;
    let l = active_listener(admin, &format!("http-{port}")).await;
    let m = hcm(&l);
    assert_eq!(m["use_remote_address"], false, "{m}");
    let ext = &m["original_ip_detection_extensions"][0]["typed_config"];
    let cidrs: Vec<(String, i64)> = ext["xff_trusted_cidrs"]["cidrs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["address_prefix"].as_str().unwrap_or_default().to_string(),
                int(&c["prefix_len"]).unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        cidrs,
        [("10.0.0.0".to_string(), 8), ("2001:db8::".to_string(), 32)],
        "{m}"
    );
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// HTTP/3: Envoy runs the QUIC listener next to the TCP one, and TCP clients are told of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_is_served_and_announced() {
    let pki = pki();
    let (s, _envoy, port, admin) = https_setup(&pki, &policy_yaml("  http3: {}\n")).await;
    let ok = answers("the route over TLS", "HTTP/1.1 200", || {
        https_app(port, &pki, false, false)
    })
    .await;
    assert!(
        ok.to_ascii_lowercase()
            .contains(&format!("alt-svc: h3=\":{port}\"; ma=86400")),
        "{ok}"
    );
    let q = active_listener(admin, &format!("quic-{port}")).await;
    assert_eq!(
        q["filter_chains"][0]["transport_socket"]["name"], "envoy.transport_sockets.quic",
        "{q}"
    );
    assert_eq!(hcm(&q)["codec_type"], "HTTP3", "{q}");
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
