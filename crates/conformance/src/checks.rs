//! Sending a request the way the suite's Go client does, and comparing the response per the
//! README's comparison rules (utils/http CompareRoundTrip); status assertions on the API's view.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// Values of a header (case-insensitive), joined with ",".
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(","))
    }
}

pub struct Outgoing<'a> {
    pub addr: SocketAddr,
    /// HTTP/2 (h2c prior knowledge, or ALPN h2 over TLS).
    pub h2c: bool,
    /// TLS with this SNI (None: cleartext).
    pub tls: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a [(String, String)],
}

/// One request on a fresh connection.
pub async fn send(o: &Outgoing<'_>, timeout: Duration) -> Result<Resp, String> {
    tokio::time::timeout(timeout, send_inner(o))
        .await
        .map_err(|_| format!("no response within {timeout:?}"))?
}

async fn send_inner(o: &Outgoing<'_>) -> Result<Resp, String> {
    let stream = tokio::net::TcpStream::connect(o.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", o.addr))?;
    match o.tls {
        None => exchange(o, TokioIo::new(stream), "http").await,
        Some(sni) => {
            let cfg = tls_config(o.h2c).map_err(|e| format!("TLS config: {e}"))?;
            let name = rustls::pki_types::ServerName::try_from(sni.to_string())
                .map_err(|e| format!("SNI {sni}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake (SNI {sni}): {e}"))?;
            exchange(o, TokioIo::new(tls), "https").await
        }
    }
}

/// Accepts any server certificate (the suite trusts the Gateway's self-signed one).
#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(h2: bool) -> Result<std::sync::Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(std::sync::Arc::new(cfg))
}

async fn exchange<I>(o: &Outgoing<'_>, io: I, scheme: &str) -> Result<Resp, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let uri = if o.h2c {
        format!("{scheme}://{}{}", o.host, o.path)
    } else {
        o.path.to_string()
    };
    let mut b = hyper::Request::builder().method(o.method).uri(uri);
    if !o.h2c {
        b = b.header("Host", o.host);
    }
    for (k, v) in o.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = if o.h2c {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2c handshake: {e}"))?;
        tokio::spawn(conn);
        s.send_request(req).await
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        s.send_request(req).await
    }
    .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn norm_status(s: u64) -> u64 {
    if s == 408 {
        504
    } else {
        s
    }
}

fn strip_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Compares one response with `expect`; `subst` replaces placeholders in expected paths.
pub fn compare(
    expect: &Value,
    request_scheme: &str,
    request_path: &str,
    resp: &Resp,
    subst: &dyn Fn(&str) -> String,
) -> Result<Option<Value>, String> {
    let want: Vec<u64> = expect["status"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let got = u64::from(resp.status);
    if !want.is_empty() && !want.iter().any(|w| norm_status(*w) == norm_status(got)) {
        let body = String::from_utf8_lossy(&resp.body);
        let snippet: String = body.chars().take(120).collect();
        return Err(format!(
            "status {got}, want {want:?} (body: {})",
            snippet.replace('\n', " ")
        ));
    }
    if got == 200 || got == 204 {
        return compare_echo(expect, resp, subst);
    }
    if (300..400).contains(&got) {
        if let Some(r) = expect.get("redirect").filter(|r| r.is_object()) {
            compare_redirect(r, request_scheme, request_path, resp)?;
        }
    }
    Ok(None)
}

fn compare_echo(
    expect: &Value,
    resp: &Resp,
    subst: &dyn Fn(&str) -> String,
) -> Result<Option<Value>, String> {
    let br = &expect["backend_request"];
    let echo: Option<Value> = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .filter(|v| v.get("pod").is_some());
    let served_by_gateway = expect["served_by_gateway"].as_bool() == Some(true)
        || (expect["namespace"].as_str() == Some("") && br["path"].as_str() == Some(""));
    if served_by_gateway {
        if echo.is_some() {
            return Err("expected the gateway to answer itself, got the echo backend".into());
        }
    } else if expect.get("backend").is_some() || expect.get("namespace").is_some() || br.is_object()
    {
        let Some(e) = &echo else {
            return Err(format!(
                "response is not echo JSON: {}",
                String::from_utf8_lossy(&resp.body)
                    .chars()
                    .take(120)
                    .collect::<String>()
            ));
        };
        if let Some(p) = br["path"].as_str() {
            let p = subst(p);
            if e["path"].as_str() != Some(p.as_str()) {
                return Err(format!("backend got path {}, want {p}", e["path"]));
            }
        }
        if let Some(m) = br["method"].as_str() {
            if e["method"].as_str() != Some(m) {
                return Err(format!("backend got method {}, want {m}", e["method"]));
            }
        }
        if let Some(h) = br["host"].as_str() {
            if e["host"].as_str() != Some(h) {
                return Err(format!("backend got host {}, want {h}", e["host"]));
            }
        }
        if let Some(n) = expect["namespace"].as_str() {
            if e["namespace"].as_str() != Some(n) {
                return Err(format!("backend namespace {}, want {n}", e["namespace"]));
            }
        }
        if let Some(b) = expect["backend"].as_str() {
            if !e["pod"].as_str().unwrap_or("").starts_with(b) {
                return Err(format!("served by pod {}, want {b}", e["pod"]));
            }
        }
        let echoed = |name: &str| -> Option<String> {
            e["headers"].as_object().and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| {
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
            })
        };
        for (name, want) in br["headers"].as_object().into_iter().flatten() {
            let want = want.as_str().unwrap_or("");
            match echoed(name) {
                Some(got) if got == want => {}
                got => return Err(format!("backend header {name}: {got:?}, want {want:?}")),
            }
        }
        for name in br["absent_headers"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or("");
            if let Some(v) = echoed(name) {
                return Err(format!("backend header {name} should be absent, is {v:?}"));
            }
        }
    }
    let ignore_ws = expect["ignore_whitespace_in_response_headers"].as_bool() == Some(true);
    for (name, want) in expect["response_headers"].as_object().into_iter().flatten() {
        let want = want.as_str().unwrap_or("");
        let got = resp.header(name);
        let ok = match &got {
            Some(g) if ignore_ws => strip_ws(g) == strip_ws(want),
            Some(g) => g == want,
            None => false,
        };
        if !ok {
            return Err(format!("response header {name}: {got:?}, want {want:?}"));
        }
    }
    for (name, opts) in expect["response_headers_any_of"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let got = resp.header(name);
        let ok = got.as_ref().is_some_and(|g| {
            opts.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|o| {
                    if ignore_ws {
                        strip_ws(g) == strip_ws(o)
                    } else {
                        g == o
                    }
                })
        });
        if !ok {
            return Err(format!(
                "response header {name}: {got:?}, want one of {opts}"
            ));
        }
    }
    for name in expect["absent_response_headers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = name.as_str().unwrap_or("");
        if let Some(v) = resp.header(name) {
            return Err(format!("response header {name} should be absent, is {v:?}"));
        }
    }
    Ok(echo)
}

/// (scheme, host, port, path) of a Location header.
fn parse_location(loc: &str) -> (Option<String>, Option<String>, Option<u16>, String) {
    let Some((scheme, rest)) = loc.split_once("://") else {
        return (None, None, None, loc.to_string());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::new()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().ok())
        }
        _ => (authority.to_string(), None),
    };
    (Some(scheme.to_string()), Some(host), port, path)
}

fn compare_redirect(
    r: &Value,
    request_scheme: &str,
    request_path: &str,
    resp: &Resp,
) -> Result<(), String> {
    let loc = resp
        .header("location")
        .ok_or("redirect without a Location header")?;
    let (scheme, host, port, path) = parse_location(&loc);
    let want_scheme = r["scheme"].as_str().unwrap_or(request_scheme);
    let got_scheme = scheme.as_deref().unwrap_or(request_scheme);
    if got_scheme != want_scheme {
        return Err(format!(
            "Location {loc}: scheme {got_scheme}, want {want_scheme}"
        ));
    }
    if let Some(h) = r["host"].as_str() {
        if host.as_deref() != Some(h) {
            return Err(format!("Location {loc}: host {host:?}, want {h}"));
        }
    }
    let want_path = r["path"].as_str().unwrap_or(request_path);
    let got_path = if path.is_empty() { "/" } else { path.as_str() };
    if got_path != want_path {
        return Err(format!("Location {loc}: path {got_path}, want {want_path}"));
    }
    // The table writes ports as strings ("8083"); accept numbers too.
    let want_port = r["port"]
        .as_u64()
        .or_else(|| r["port"].as_str().and_then(|p| p.parse().ok()));
    match want_port {
        Some(p) => {
            if port.map(u64::from) != Some(p) {
                return Err(format!("Location {loc}: port {port:?}, want {p}"));
            }
        }
        None => {
            let default = if want_scheme == "https" { 443 } else { 80 };
            if port.is_some_and(|p| p != default) {
                return Err(format!(
                    "Location {loc}: port {port:?}, want none or {default}"
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- status

/// Fetches a resource's stored view (object with computed status) from the API.
pub type Fetch<'a> = &'a dyn Fn(&str, &str) -> Option<Value>;

fn conds(v: &Value) -> impl Iterator<Item = &Value> {
    v["conditions"].as_array().into_iter().flatten()
}

fn has_cond(v: &Value, ty: &str, status: &str, reason: Option<&str>) -> bool {
    conds(v).any(|c| {
        c["type"].as_str() == Some(ty)
            && c["status"].as_str() == Some(status)
            && reason.is_none_or(|r| c["reason"].as_str() == Some(r))
    })
}

fn split_ns(full: &str) -> (&str, &str) {
    full.split_once('/').unwrap_or(("", full))
}

/// The route's parent status entries for the Gateway `gw` ("ns/name").
fn parents_for<'a>(route: &'a Value, route_ns: &str, gw: &str) -> Vec<&'a Value> {
    let (gns, gname) = split_ns(gw);
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let r = &p["parentRef"];
            r["name"].as_str() == Some(gname)
                && r["namespace"].as_str().unwrap_or(route_ns) == gns
                && r["kind"].as_str().unwrap_or("Gateway") == "Gateway"
        })
        .collect()
}

/// Does a route parent's `parentRef` select listener `section` of Gateway `gw`? By its
/// sectionName, or, without one, by its port (the listener's) or by naming the whole Gateway.
/// (The suite's `parentsForRouteMatch` compares no sectionName at all.)
fn parent_selects_listener(gw: &Value, parent_ref: &Value, section: &str) -> bool {
    if let Some(s) = parent_ref["sectionName"].as_str() {
        return s == section;
    }
    let Some(port) = parent_ref["port"].as_u64() else {
        return true;
    };
    gw["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|l| l["name"].as_str() == Some(section) && l["port"].as_u64() == Some(port))
}

/// Kinds of status check this harness evaluates.
pub const STATUS_CHECKS: &[&str] = &[
    "gateway_and_routes_accepted",
    "route_condition",
    "route_no_accepted_parents",
    "gateway_zero_routes",
    "gateway_condition",
    "gateway_listeners",
    "route_parents",
    "latest_observed_generation",
    "gateway_has_address",
    "gatewayclass_accepted_any",
];

/// Evaluates one status expectation.
pub fn check_status(c: &Value, fetch: Fetch<'_>) -> Result<(), String> {
    let get = |kind: &str, full: &str| -> Result<Value, String> {
        fetch(kind, full).ok_or_else(|| format!("{kind} {full} not found in the API"))
    };
    match c["check"].as_str().unwrap_or("") {
        "gateway_and_routes_accepted" => {
            let gwn = c["gateway"].as_str().unwrap_or("");
            let gw = get("Gateway", gwn)?;
            if gw["status"]["addresses"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            {
                return Err(format!("Gateway {gwn} has no status.addresses"));
            }
            let listed: Option<Vec<&str>> = c["listeners"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            let kind = c["route_kind"].as_str().unwrap_or("HTTPRoute");
            for r in c["routes"].as_array().into_iter().flatten() {
                let rn = r.as_str().unwrap_or("");
                let route = get(kind, rn)?;
                let ps = parents_for(&route, split_ns(rn).0, gwn);
                let sections: Vec<Option<&str>> = match &listed {
                    Some(l) => l.iter().map(|s| Some(*s)).collect(),
                    None => vec![None],
                };
                for s in sections {
                    let ok = ps.iter().any(|p| {
                        s.is_none_or(|s| parent_selects_listener(&gw, &p["parentRef"], s))
                            && has_cond(p, "Accepted", "True", Some("Accepted"))
                    });
                    if !ok {
                        return Err(format!(
                            "{kind} {rn}: no Accepted=True parent for {gwn}{}",
                            s.map(|s| format!(" section {s}")).unwrap_or_default()
                        ));
                    }
                }
            }
            for l in gw["status"]["listeners"].as_array().into_iter().flatten() {
                let ln = l["name"].as_str().unwrap_or("");
                if listed.as_ref().is_some_and(|ls| !ls.contains(&ln)) {
                    continue;
                }
                for t in ["ResolvedRefs", "Accepted", "Programmed"] {
                    if !has_cond(l, t, "True", None) {
                        return Err(format!("Gateway {gwn} listener {ln}: {t} is not True"));
                    }
                }
            }
            Ok(())
        }
        "route_condition" => {
            let kind = c["route_kind"].as_str().unwrap_or("HTTPRoute");
            let rn = c["route"].as_str().unwrap_or("");
            let gwn = c["parent"].as_str().unwrap_or("");
            let route = get(kind, rn)?;
            let want = &c["condition"];
            let ps = parents_for(&route, split_ns(rn).0, gwn);
            let (ty, st, re) = (
                want["type"].as_str().unwrap_or(""),
                want["status"].as_str().unwrap_or(""),
                want["reason"].as_str(),
            );
            if ps.iter().any(|p| has_cond(p, ty, st, re)) {
                Ok(())
            } else {
                let got: Vec<String> = ps
                    .iter()
                    .flat_map(|p| conds(p))
                    .filter(|c| c["type"].as_str() == Some(ty))
                    .map(|c| format!("{}/{}", c["status"], c["reason"]))
                    .collect();
                Err(format!(
                    "{kind} {rn} parent {gwn}: want {ty}={st}/{}, got {got:?}",
                    re.unwrap_or("*")
                ))
            }
        }
        "route_no_accepted_parents" => {
            let kind = c["route_kind"].as_str().unwrap_or("HTTPRoute");
            let rn = c["route"].as_str().unwrap_or("");
            let route = get(kind, rn)?;
            let ps = route["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match ps.as_slice() {
                [] => Ok(()),
                [p] if has_cond(p, "Accepted", "False", None) => Ok(()),
                _ => Err(format!(
                    "{kind} {rn}: want no parents or one with Accepted=False, got {}",
                    Value::Array(ps.clone())
                )),
            }
        }
        "gateway_zero_routes" => {
            let gwn = c["gateway"].as_str().unwrap_or("");
            let gw = get("Gateway", gwn)?;
            let ls = gw["status"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match ls.as_slice() {
                [] => Ok(()),
                [l] if l["attachedRoutes"].as_u64() == Some(0) => Ok(()),
                _ => Err(format!(
                    "Gateway {gwn}: want zero attached routes, listeners {}",
                    Value::Array(ls.clone())
                )),
            }
        }
        "gateway_condition" => {
            let gwn = c["gateway"].as_str().unwrap_or("");
            let gw = get("Gateway", gwn)?;
            let w = &c["condition"];
            let (ty, st, re) = (
                w["type"].as_str().unwrap_or(""),
                w["status"].as_str().unwrap_or(""),
                w["reason"].as_str(),
            );
            if has_cond(&gw["status"], ty, st, re) {
                Ok(())
            } else {
                Err(format!(
                    "Gateway {gwn}: want {ty}={st}/{}, got {}",
                    re.unwrap_or("*"),
                    gw["status"]["conditions"]
                ))
            }
        }
        "gateway_listeners" => {
            let gwn = c["gateway"].as_str().unwrap_or("");
            let gw = get("Gateway", gwn)?;
            let got = gw["status"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let want = c["listeners"].as_array().cloned().unwrap_or_default();
            let mut gn: Vec<&str> = got.iter().filter_map(|l| l["name"].as_str()).collect();
            let mut wn: Vec<&str> = want.iter().filter_map(|l| l["name"].as_str()).collect();
            gn.sort();
            wn.sort();
            if gn != wn {
                return Err(format!("Gateway {gwn}: listeners {gn:?}, want {wn:?}"));
            }
            for w in &want {
                let ln = w["name"].as_str().unwrap_or("");
                let Some(l) = got.iter().find(|l| l["name"].as_str() == Some(ln)) else {
                    continue;
                };
                let wk = w["supported_kinds"].as_array().cloned().unwrap_or_default();
                let gk = l["supportedKinds"].as_array().cloned().unwrap_or_default();
                if wk.is_empty() && !gk.is_empty() {
                    return Err(format!(
                        "Gateway {gwn} listener {ln}: supportedKinds {}, want none",
                        Value::Array(gk)
                    ));
                }
                for k in &wk {
                    let ok = gk.iter().any(|g| {
                        g["kind"] == k["kind"]
                            && g["group"].as_str().unwrap_or("gateway.networking.k8s.io")
                                == k["group"].as_str().unwrap_or("gateway.networking.k8s.io")
                    });
                    if !ok {
                        return Err(format!(
                            "Gateway {gwn} listener {ln}: supportedKinds {} lacks {}",
                            Value::Array(gk.clone()),
                            k["kind"]
                        ));
                    }
                }
                if let Some(n) = w["attached_routes"].as_u64() {
                    if l["attachedRoutes"].as_u64() != Some(n) {
                        return Err(format!(
                            "Gateway {gwn} listener {ln}: attachedRoutes {}, want {n}",
                            l["attachedRoutes"]
                        ));
                    }
                }
                for wc in w["conditions"].as_array().into_iter().flatten() {
                    let (ty, st, re) = (
                        wc["type"].as_str().unwrap_or(""),
                        wc["status"].as_str().unwrap_or(""),
                        wc["reason"].as_str(),
                    );
                    if !has_cond(l, ty, st, re) {
                        return Err(format!(
                            "Gateway {gwn} listener {ln}: want {ty}={st}/{}, got {}",
                            re.unwrap_or("*"),
                            l["conditions"]
                        ));
                    }
                }
            }
            Ok(())
        }
        "route_parents" => {
            let kind = c["route_kind"].as_str().unwrap_or("HTTPRoute");
            let rn = c["route"].as_str().unwrap_or("");
            let route = get(kind, rn)?;
            let got = route["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let want = c["parents"].as_array().cloned().unwrap_or_default();
            if got.len() != want.len() {
                return Err(format!(
                    "{kind} {rn}: {} parents, want {}",
                    got.len(),
                    want.len()
                ));
            }
            for w in &want {
                let wr = &w["parent_ref"];
                let found = got.iter().find(|g| {
                    let gr = &g["parentRef"];
                    gr["name"] == wr["name"]
                        && (c["namespace_required"].as_bool() != Some(true)
                            || gr["namespace"] == wr["namespace"])
                });
                let Some(g) = found else {
                    return Err(format!("{kind} {rn}: no parent {wr}"));
                };
                for wc in w["conditions"].as_array().into_iter().flatten() {
                    let (ty, st, re) = (
                        wc["type"].as_str().unwrap_or(""),
                        wc["status"].as_str().unwrap_or(""),
                        wc["reason"].as_str(),
                    );
                    if !has_cond(g, ty, st, re) {
                        return Err(format!(
                            "{kind} {rn}: want {ty}={st}/{}, got {}",
                            re.unwrap_or("*"),
                            g["conditions"]
                        ));
                    }
                }
            }
            Ok(())
        }
        "latest_observed_generation" => {
            let kind = c["kind"].as_str().unwrap_or("");
            let n = c["name"].as_str().unwrap_or("");
            let v = get(kind, n)?;
            let gen = v["metadata"]["generation"].as_i64().unwrap_or(0);
            let mut all: Vec<&Value> = conds(&v["status"]).collect();
            for l in v["status"]["listeners"].as_array().into_iter().flatten() {
                all.extend(conds(l));
            }
            for p in v["status"]["parents"].as_array().into_iter().flatten() {
                all.extend(conds(p));
            }
            if all.is_empty() {
                return Err(format!("{kind} {n}: no status conditions"));
            }
            match all
                .iter()
                .find(|c| c["observedGeneration"].as_i64() != Some(gen))
            {
                Some(c) => Err(format!(
                    "{kind} {n}: condition {} observedGeneration {}, generation {gen}",
                    c["type"], c["observedGeneration"]
                )),
                None => Ok(()),
            }
        }
        "gateway_has_address" => {
            let gwn = c["gateway"].as_str().unwrap_or("");
            let gw = get("Gateway", gwn)?;
            let ok = gw["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["type"].is_string());
            ok.then_some(())
                .ok_or_else(|| format!("Gateway {gwn}: no status.addresses with a type"))
        }
        "gatewayclass_accepted_any" => {
            let n = c["gatewayclass"].as_str().unwrap_or("");
            let gc = get("GatewayClass", n)?;
            let ok = conds(&gc["status"]).any(|c| c["type"].as_str() == Some("Accepted"));
            ok.then_some(())
                .ok_or_else(|| format!("GatewayClass {n}: no Accepted condition"))
        }
        other => Err(format!("status check {other} not implemented")),
    }
}

// ---------------------------------------------------------------- gRPC

/// gRPC status code names as the table writes them.
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|p| u32::try_from(p).ok())
}

/// grpc-go's mapping of an HTTP status without grpc-status to a gRPC code.
fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// One unary call of an empty EchoRequest over h2c; returns the code and, for OK, the echoed
/// assertions as {"fully_qualified_method", "namespace", "pod"}.
pub async fn grpc_call(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    metadata: &[(String, String)],
    timeout: Duration,
) -> Result<(u32, Option<Value>), String> {
    tokio::time::timeout(timeout, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("h2c handshake: {e}"))?;
        tokio::spawn(conn);
        let mut b = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in metadata {
            b = b.header(k.to_ascii_lowercase(), v.as_str());
        }
        let req = b
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .map_err(|e| format!("bad request: {e}"))?;
        let resp = s
            .send_request(req)
            .await
            .map_err(|e| format!("gRPC call failed: {e}"))?;
        let status = resp.status().as_u16();
        let header_code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading gRPC body: {e}"))?;
        let trailer_code = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let body = collected.to_bytes();
        let code = header_code.or(trailer_code).unwrap_or(if status == 200 {
            2
        } else {
            http_to_grpc(status)
        });
        if code != 0 || body.len() < 5 {
            let body = String::from_utf8_lossy(&body)
                .chars()
                .take(100)
                .collect::<String>();
            return Ok((
                code,
                Some(serde_json::json!({"http_status": status, "body": body})),
            ));
        }
        let msg = &body[5..];
        let mut out = serde_json::json!({});
        for (f, a) in crate::echo::pb_fields(msg) {
            if f != 1 {
                continue;
            }
            for (f, v) in crate::echo::pb_fields(&a) {
                match f {
                    1 => out["fully_qualified_method"] = String::from_utf8_lossy(&v).into(),
                    4 => {
                        for (f, v) in crate::echo::pb_fields(&v) {
                            match f {
                                1 => out["namespace"] = String::from_utf8_lossy(&v).into(),
                                4 => out["pod"] = String::from_utf8_lossy(&v).into(),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok((code, Some(out)))
    })
    .await
    .map_err(|_| format!("no gRPC response within {timeout:?}"))?
}

/// Compares a gRPC result with `expect` {grpc_code, backend, namespace, echoed_fully_qualified_method}.
pub fn compare_grpc(expect: &Value, code: u32, echo: &Option<Value>) -> Result<(), String> {
    let want = expect["grpc_code"]
        .as_str()
        .and_then(grpc_code)
        .unwrap_or(0);
    if code != want {
        return Err(format!(
            "gRPC code {code}, want {want} ({}); response {}",
            expect["grpc_code"],
            echo.as_ref().unwrap_or(&Value::Null)
        ));
    }
    if code != 0 {
        return Ok(());
    }
    let e = echo.as_ref().ok_or("no EchoResponse")?;
    if let Some(m) = expect["echoed_fully_qualified_method"].as_str() {
        if e["fully_qualified_method"].as_str() != Some(m) {
            return Err(format!(
                "echoed method {}, want {m}",
                e["fully_qualified_method"]
            ));
        }
    }
    if let Some(n) = expect["namespace"].as_str() {
        if e["namespace"].as_str() != Some(n) {
            return Err(format!("backend namespace {}, want {n}", e["namespace"]));
        }
    }
    if let Some(b) = expect["backend"].as_str() {
        if !e["pod"].as_str().unwrap_or("").starts_with(b) {
            return Err(format!("served by pod {}, want {b}", e["pod"]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Resp {
        Resp {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn echo_comparison() {
        let body = json!({"path": "/a?x=1", "method": "GET", "namespace": "ns", "pod": "infra-backend-v1-x-y",
                          "headers": {"X-A": ["1", "2"]}})
        .to_string();
        let e = json!({"status": [200], "backend": "infra-backend-v1", "namespace": "ns",
                       "backend_request": {"path": "/a?x=1", "method": "GET", "headers": {"x-a": "1,2"}, "absent_headers": ["X-B"]}});
        let id = |s: &str| s.to_string();
        assert!(compare(&e, "http", "/a", &resp(200, &[], &body), &id).is_ok());
        let e2 = json!({"status": [200], "backend": "infra-backend-v2"});
        assert!(compare(&e2, "http", "/a", &resp(200, &[], &body), &id).is_err());
        assert!(compare(
            &json!({"status": [504]}),
            "http",
            "/",
            &resp(408, &[], ""),
            &id
        )
        .is_ok());
    }

    #[test]
    fn parent_selects_listener_by_section_port_or_whole_gateway() {
        let gw = json!({"spec": {"listeners": [{"name": "l1", "port": 80}, {"name": "l2", "port": 8080}]}});
        assert!(parent_selects_listener(
            &gw,
            &json!({"sectionName": "l1"}),
            "l1"
        ));
        assert!(!parent_selects_listener(
            &gw,
            &json!({"sectionName": "l2", "port": 80}),
            "l1"
        ));
        assert!(parent_selects_listener(&gw, &json!({"port": 80}), "l1"));
        assert!(!parent_selects_listener(&gw, &json!({"port": 8080}), "l1"));
        assert!(parent_selects_listener(&gw, &json!({"name": "gw"}), "l2"));
    }

    #[test]
    fn redirect_comparison() {
        let id = |s: &str| s.to_string();
        let e8 = json!({"status": [302], "redirect": {"scheme": "http", "host": null, "port": "8083", "path": "/x"}});
        let ok8 = resp(302, &[("location", "http://h:8083/x")], "");
        assert!(compare(&e8, "http", "/x", &ok8, &id).is_ok());
        let e = json!({"status": [302], "redirect": {"scheme": "https", "host": "example.org", "port": null, "path": "/x"}});
        let ok = resp(302, &[("location", "https://example.org:443/x")], "");
        assert!(compare(&e, "http", "/x", &ok, &id).is_ok());
        let bad = resp(302, &[("location", "https://example.org:8443/x")], "");
        assert!(compare(&e, "http", "/x", &bad, &id).is_err());
    }
}
