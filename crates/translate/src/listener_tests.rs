//! Listener validation, conflicts, ListenerSets, and TLS/TCP/UDP routes, end to end through
//! the translator.

use crate::tests::{cert_secret, gateway_class};
use crate::{type_url, Translator};
use envoy_types::pb::envoy::config::listener::v3::Listener as EnvoyListener;
use flotilla_model::{EventBody, Kind, ResourceEvent, ResourceKey};
use prost::Message;
use serde_json::Value;

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBsTCCAVigAwIBAgIUINkqe8ycUz7yfMr6BOEwbjVZSO0wCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTAgFw0yNjEyMDEyMjMxMDZaGA8yMTI2\nMTEwNzIyMzEwNlowGDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTBZMBMGByqGSM49\nAgEGCCqGSM49AwEHA0IABNZIQSznfInxxBp/+2Nnck0BG/h6xGberbObhVWVFjHP\nDQ03KW8Elsy6YluS5NvK4ae9D9mvDRonvEm306oAoe6jfjB8MB0GA1UdDgQWBBSg\n52YtRPaJM2vjlf+MiTjAkqWXZzAfBgNVHSMEGDAWgBSg52YtRPaJM2vjlf+MiTjA\nkqWXZzAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDWEuZXhhbXBsZS5jb22C\nDyouYi5leGFtcGxlLmNvbTAKBggqhkjOPQQDAgNHADBEAiAd1ee+23TPWB16jm2U\nn/WXvDd6AmXKVXXzcHNqe9GGvQIgbbjNwSGFG29Nl5tYYX0mJA5uGx8p9urqRzdm\njmhl228=\n-----END CERTIFICATE-----\n";

const CLASS: &str = concat!(
    gateway_class!(),
    r#"---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: app}
spec: {ports: [{name: tcp, port: 80}, {name: udp, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: app, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: tcp, port: 9000}, {name: udp, port: 5353, protocol: UDP}]
endpoints: [{addresses: [127.0.0.1]}]
---
"#,
    cert_secret!(),
    r#"---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca, namespace: infra}
data:
  ca.crt: |
    -----BEGIN CERTIFICATE-----
    MIIBsTCCAVigAwIBAgIUINkqe8ycUz7yfMr6BOEwbjVZSO0wCgYIKoZIzj0EAwIw
    GDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTAgFw0yNjEyMDEyMjMxMDZaGA8yMTI2
    MTEwNzIyMzEwNlowGDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTBZMBMGByqGSM49
    AgEGCCqGSM49AwEHA0IABNZIQSznfInxxBp/+2Nnck0BG/h6xGberbObhVWVFjHP
    DQ03KW8Elsy6YluS5NvK4ae9D9mvDRonvEm306oAoe6jfjB8MB0GA1UdDgQWBBSg
    52YtRPaJM2vjlf+MiTjAkqWXZzAfBgNVHSMEGDAWgBSg52YtRPaJM2vjlf+MiTjA
    kqWXZzAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDWEuZXhhbXBsZS5jb22C
    DyouYi5leGFtcGxlLmNvbTAKBggqhkjOPQQDAgNHADBEAiAd1ee+23TPWB16jm2U
    n/WXvDd6AmXKVXXzcHNqe9GGvQIgbbjNwSGFG29Nl5tYYX0mJA5uGx8p9urqRzdm
    jmhl228=
    -----END CERTIFICATE-----
---
apiVersion: v1
kind: Secret
metadata: {name: mismatch, namespace: infra}
type: kubernetes.io/tls
data:
  tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJzVENDQVZpZ0F3SUJBZ0lVSU5rcWU4eWNVejd5Zk1yNkJPRXdialZaU08wd0NnWUlLb1pJemowRUF3SXcKR0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEFnRncweU5qRXlNREV5TWpNeE1EWmFHQTh5TVRJMgpNVEV3TnpJeU16RXdObG93R0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEJaTUJNR0J5cUdTTTQ5CkFnRUdDQ3FHU000OUF3RUhBMElBQk5aSVFTem5mSW54eEJwLysyTm5jazBCRy9oNnhHYmVyYk9iaFZXVkZqSFAKRFEwM0tXOEVsc3k2WWx1UzVOdks0YWU5RDltdkRSb252RW0zMDZvQW9lNmpmakI4TUIwR0ExVWREZ1FXQkJTZwo1Mll0UlBhSk0ydmpsZitNaVRqQWtxV1haekFmQmdOVkhTTUVHREFXZ0JTZzUyWXRSUGFKTTJ2amxmK01pVGpBCmtxV1haekFQQmdOVkhSTUJBZjhFQlRBREFRSC9NQ2tHQTFVZEVRUWlNQ0NDRFdFdVpYaGhiWEJzWlM1amIyMkMKRHlvdVlpNWxlR0Z0Y0d4bExtTnZiVEFLQmdncWhrak9QUVFEQWdOSEFEQkVBaUFkMWVlKzIzVFBXQjE2am0yVQpuL1dYdkRkNkFtWEtWWFh6Y0hOcWU5R0d2UUlnYmJqTndTR0ZHMjlObDV0WVlYMG1KQTV1R3g4cDl1cnFSemRtCmptaGwyMjg9Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
  tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEJHMHdhd0lCQVFRZzBjLzgzZjVKQ0RpcDJNcDgKQWx0NkFjb3lzbGEydXhoY1NobHZySUd6eVVLaFJBTkNBQVFuRlBCRkFIcEdiMEYvZ3M2d2k0d09NZ1NaakduSgplZlFOSHZiRnp3WktVZi94RUk1Wk56ZWpac3BmeC8wOG5TYlptcDNZNGtYVlk2WlB6dzN6U08zYgotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==
"#
);

fn translate(text: &str) -> Translator {
    crate::tests::translate_yaml(&format!(
        "{CLASS}---
{text}"
    ))
}

fn status(t: &Translator, kind: Kind, ns: &str, name: &str) -> Value {
    t.status(&ResourceKey::new("c1", kind, ns, name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// (type, status, reason) of the conditions of listener `name` in a status.
fn listener_conds(st: &Value, name: &str) -> Vec<(String, String, String)> {
    let l = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("listener {name} in {st}"));
    let mut v: Vec<_> = l["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

fn ok() -> Vec<(String, String, String)> {
    vec![
        c("Accepted", "True", "Accepted"),
        c("Programmed", "True", "Programmed"),
        c("ResolvedRefs", "True", "ResolvedRefs"),
    ]
}

fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: eg\n  listeners:\n{listeners}"
    )
}

fn envoy_listeners(t: &Translator) -> Vec<EnvoyListener> {
    t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::LISTENER)
        .map(|r| EnvoyListener::decode(r.body.clone()).unwrap())
        .collect()
}

#[test]
fn every_protocol_is_accepted_and_programmed() {
    let t = translate(&gateway(
        "  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: pass, port: 443, protocol: TLS, hostname: b.example.com, tls: {mode: Passthrough}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: udp, port: 53, protocol: UDP}
",
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    for l in ["http", "https", "pass", "tcp", "udp"] {
        assert_eq!(listener_conds(&st, l), ok(), "{l}");
    }
    let names: Vec<String> = envoy_listeners(&t).into_iter().map(|l| l.name).collect();
    // The passthrough listener has no route yet: only the HTTPS chain serves port 443.
    assert_eq!(names, ["http-80", "tcp-443"]);
}

#[test]
fn invalid_listeners_get_envoy_gateway_reasons() {
    let t = translate(&gateway(
        "  - {name: sctp, port: 1, protocol: SCTP}
  - {name: nocert, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}
  - {name: pass, port: 444, protocol: HTTPS, tls: {mode: Passthrough}}
  - {name: tcph, port: 9000, protocol: TCP, hostname: x.example.com}
  - {name: kinds, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: FooRoute}]}}
  - {name: sel, port: 81, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}
",
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    assert_eq!(
        listener_conds(&st, "sctp"),
        [
            c("Accepted", "False", "UnsupportedProtocol"),
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    assert_eq!(
        listener_conds(&st, "nocert"),
        [
            c("Accepted", "True", "Accepted"),
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "False", "InvalidCertificateRef")
        ]
    );
    assert_eq!(
        listener_conds(&st, "pass"),
        [
            c("Programmed", "False", "UnsupportedTLSMode"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    assert_eq!(
        listener_conds(&st, "tcph"),
        [
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    assert_eq!(
        listener_conds(&st, "kinds"),
        [
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "False", "InvalidRouteKinds")
        ]
    );
    assert_eq!(
        listener_conds(&st, "sel"),
        [
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    // Nothing invalid reaches Envoy.
    assert!(envoy_listeners(&t).is_empty());
}

#[test]
fn conflicts_on_a_port() {
    let t = translate(&gateway(
        "  - {name: a, port: 80, protocol: HTTP, hostname: x.com}
  - {name: b, port: 80, protocol: HTTP, hostname: x.com}
  - {name: h, port: 81, protocol: HTTP}
  - {name: t, port: 81, protocol: TCP}
  - {name: u1, port: 53, protocol: UDP}
  - {name: u2, port: 53, protocol: UDP}
",
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    let conflicted = |reason: &str| {
        vec![
            c("Conflicted", "True", reason),
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "True", "ResolvedRefs"),
        ]
    };
    assert_eq!(listener_conds(&st, "a"), conflicted("HostnameConflict"));
    assert_eq!(listener_conds(&st, "b"), conflicted("HostnameConflict"));
    assert_eq!(listener_conds(&st, "h"), conflicted("ProtocolConflict"));
    assert_eq!(listener_conds(&st, "t"), conflicted("ProtocolConflict"));
    assert_eq!(listener_conds(&st, "u1"), ok());
    assert_eq!(listener_conds(&st, "u2"), conflicted("ProtocolConflict"));
    let msg = st["listeners"][0]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert_eq!(
        msg,
        "All listeners for a given port must use a unique hostname, conflicting listeners: infra/gw/a, infra/gw/b"
    );
}

#[test]
fn tcp_udp_and_tls_routes_attach_and_program() {
    let t = translate(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: tls, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [b.example.com, c.example.com]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
",
        gateway(
            "  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
  - {name: udp, port: 53, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}
  - {name: pass, port: 443, protocol: TLS, hostname: b.example.com, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
"
        )
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    for (l, n) in [("tcp", 1), ("udp", 1), ("pass", 1)] {
        let e = st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == l)
            .unwrap();
        assert_eq!(e["attachedRoutes"], n, "{l}");
    }
    let route = |k, n| status(&t, k, "app", n)["parents"][0]["conditions"].clone();
    assert_eq!(route(Kind::TCPRoute, "tcp")[0]["reason"], "Accepted");
    assert_eq!(route(Kind::TLSRoute, "tls")[0]["reason"], "Accepted");
    // The UDP route names a TCP port of the Service.
    assert_eq!(route(Kind::UDPRoute, "udp")[1]["reason"], "PortNotFound");
    assert_eq!(
        route(Kind::UDPRoute, "udp")[1]["message"],
        "UDP Port 80 not found on Service app/svc"
    );
    let ls = envoy_listeners(&t);
    let names: Vec<&str> = ls.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["tcp-443", "tcp-9000"]);
    let pass = &ls[0];
    assert_eq!(
        pass.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert_eq!(
        pass.filter_chains[0]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .server_names,
        ["b.example.com"]
    );
    assert!(ls[1].filter_chains[0].filter_chain_match.is_none());
}

#[test]
fn udp_route_programs_a_udp_listener() {
    let t = translate(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: svc, port: 53}}]}}]
",
        gateway(
            "  - {name: udp, port: 53, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}\n"
        )
    ));
    let ls = envoy_listeners(&t);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].name, "udp-53");
    assert!(ls[0].udp_listener_config.is_some());
    assert_eq!(
        ls[0].listener_filters[0].name,
        "envoy.filters.udp_listener.udp_proxy"
    );
}

#[test]
fn listener_set_attaches_and_reports() {
    let t = translate(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  allowedListeners: {namespaces: {from: Same}}
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: a.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ls, namespace: infra}
spec:
  parentRef: {name: gw}
  listeners:
  - {name: dup, port: 80, protocol: HTTP, hostname: a.com}
  - {name: extra, port: 81, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: other, namespace: app}
spec:
  parentRef: {name: gw, namespace: infra}
  listeners: [{name: x, port: 82, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: ListenerSet, name: ls, namespace: infra}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
",
    );
    let gw = status(&t, Kind::Gateway, "infra", "gw");
    assert_eq!(listener_conds(&gw, "http"), ok());
    let ls = status(&t, Kind::ListenerSet, "infra", "ls");
    assert_eq!(
        listener_conds(&ls, "dup"),
        [
            c("Accepted", "False", "HostnameConflict"),
            c("Conflicted", "True", "HostnameConflict"),
            c("Programmed", "False", "HostnameConflict"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    let mut good = ok();
    good.insert(1, c("Conflicted", "False", "NoConflicts"));
    assert_eq!(listener_conds(&ls, "extra"), good);
    assert_eq!(ls["conditions"][0]["reason"], "ListenersNotValid");
    assert_eq!(ls["conditions"][0]["status"], "True");
    let extra = ls["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "extra")
        .unwrap();
    assert_eq!(extra["attachedRoutes"], 1);
    let other = status(&t, Kind::ListenerSet, "app", "other");
    assert_eq!(other["conditions"][0]["reason"], "NotAllowed");
    let r = status(&t, Kind::HTTPRoute, "app", "r");
    assert_eq!(r["parents"][0]["conditions"][0]["reason"], "Accepted");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let t = translate(&gateway(
        "  - {name: bad, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: mismatch}]}}
  - {name: both, port: 444, protocol: HTTPS, tls: {certificateRefs: [{name: cert}, {name: mismatch}]}}
",
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    assert_eq!(
        listener_conds(&st, "bad"),
        [
            c("Accepted", "True", "Accepted"),
            c("Programmed", "False", "Invalid"),
            c("ResolvedRefs", "False", "InvalidCertificateRef")
        ]
    );
    let bad = &st["listeners"][0]["conditions"][0]["message"];
    assert_eq!(
        bad,
        "No valid secrets exist: infra/mismatch must contain a matching tls.crt and tls.key: tls: private key does not match public key."
    );
    assert_eq!(
        listener_conds(&st, "both"),
        [
            c("Accepted", "True", "Accepted"),
            c("Programmed", "True", "Programmed"),
            c("ResolvedRefs", "False", "PartiallyInvalidCertificateRef")
        ]
    );
    // Only the listener with a usable certificate reaches Envoy, with only that certificate.
    let ls = envoy_listeners(&t);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].name, "tcp-444");
}

#[test]
fn overlapping_certificates_are_reported() {
    let t = translate(&gateway(
        "  - {name: a, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: b, port: 443, protocol: HTTPS, hostname: x.b.example.com, tls: {certificateRefs: [{name: cert}]}}
",
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    let mut want = ok();
    want.insert(
        1,
        c("OverlappingTLSConfig", "True", "OverlappingCertificates"),
    );
    assert_eq!(listener_conds(&st, "a"), want);
    assert_eq!(listener_conds(&st, "b"), want);
}

/// Runs the real Envoy (`ENVOY_BIN`, or the toolchain's install) in validate mode on a
/// bootstrap holding every listener and cluster a gateway translates to.
#[test]
fn envoy_accepts_tls_tcp_and_udp_listeners() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let t = translate(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: tls, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [b.example.com]
  rules: [{{backendRefs: [{{name: svc, port: 80, weight: 1}}, {{name: svc, port: 80, weight: 2}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: svc, port: 53}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: app}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
",
        gateway(
            "  - {name: http, port: 18080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: https, port: 18443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}, allowedRoutes: {namespaces: {from: All}}}
  - {name: pass, port: 18443, protocol: TLS, hostname: '*.example.com', tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: term, port: 18444, protocol: TLS, hostname: '*', tls: {certificateRefs: [{name: cert}]}, allowedRoutes: {namespaces: {from: All}}}
  - {name: tcp, port: 19000, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
  - {name: udp, port: 19053, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}
"
        )
        // HTTPS listeners also validate client certificates.
        .replace(
            "  gatewayClassName: eg\n",
            "  gatewayClassName: eg\n  tls: {frontend: {default: {validation: {caCertificateRefs: [{kind: ConfigMap, name: ca}]}}}}\n",
        )
    ));
    let gw = &t.gateways()["c1/infra/gw"];
    let of = |url: &'static str| gw.resources.iter().filter(move |r| r.type_url == url);
    let listeners: Vec<EnvoyListener> = of(type_url::LISTENER)
        .map(|r| EnvoyListener::decode(r.body.clone()).unwrap())
        .collect();
    assert_eq!(
        listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        [
            "http-18080",
            "tcp-18443",
            "tcp-18444",
            "tcp-19000",
            "udp-19053"
        ]
    );
    let clusters: Vec<Cluster> = of(type_url::CLUSTER)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
        .collect();
    if let Err(e) = crate::tests::envoy_validate_static(listeners, clusters, "c1/infra/gw") {
        panic!("envoy rejected the configuration:\n{e}");
    }
}

#[test]
fn frontend_client_validation() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
    let mut t = translate(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  tls:
    frontend:
      default:
        validation: {caCertificateRefs: [{kind: ConfigMap, name: ca}], mode: AllowInsecureFallback}
      perPort:
      - port: 444
        tls:
          validation: {caCertificateRefs: [{kind: ConfigMap, name: missing}]}
  listeners:
  - {name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: b, port: 444, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
",
    );
    // Envoy Gateway's translator view: the Gateway-level Accepted/Programmed that its status
    // updater adds are checked in `gateway_level_conditions`.
    let st = t
        .translator_status(&ResourceKey::new("c1", Kind::Gateway, "infra", "gw"))
        .unwrap()
        .clone();
    assert_eq!(listener_conds(&st, "a"), ok());
    assert_eq!(
        listener_conds(&st, "b"),
        [
            c("Accepted", "False", "NoValidCACertificate"),
            c("Programmed", "False", "InvalidCACertificateRef"),
            c("ResolvedRefs", "False", "InvalidCACertificateRef")
        ]
    );
    let gw_conds: Vec<(String, String, String)> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            c(
                x["type"].as_str().unwrap(),
                x["status"].as_str().unwrap(),
                x["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        gw_conds,
        [
            c(
                "InsecureFrontendValidationMode",
                "True",
                "ConfigurationChanged"
            ),
            c("ResolvedRefs", "False", "InvalidParameters")
        ]
    );
    let ls = envoy_listeners(&t);
    assert_eq!(ls.len(), 1);
    let ts = ls[0].filter_chains[0].transport_socket.as_ref().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &ts.config_type
    else {
        panic!("typed config");
    };
    let ctx = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    // AllowInsecureFallback: validate a certificate when given, but do not require one.
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(false));
    assert!(ctx
        .common_tls_context
        .unwrap()
        .validation_context_type
        .is_some());
    // The missing CA appears: the listener that named it is recomputed and becomes valid.
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "missing", "namespace": "infra"},
        "data": {"ca.crt": CA_PEM},
    });
    t.apply(&ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Upsert {
            key: ResourceKey::new("c1", Kind::ConfigMap, "infra", "missing"),
            object: cm,
            origin: None,
        },
    })
    .unwrap();
    t.recompute();
    let st = status(&t, Kind::Gateway, "infra", "gw");
    assert_eq!(listener_conds(&st, "b"), ok());
}

#[test]
fn deleting_a_listener_set_clears_its_status_and_detaches_routes() {
    let text = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  allowedListeners: {namespaces: {from: All}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ls, namespace: app}
spec:
  parentRef: {name: gw, namespace: infra}
  listeners: [{name: tcp, port: 9000, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{kind: ListenerSet, name: ls}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
";
    let mut t = translate(text);
    let ls_key = ResourceKey::new("c1", Kind::ListenerSet, "app", "ls");
    assert_eq!(
        t.status(&ls_key).unwrap()["listeners"][0]["attachedRoutes"],
        1
    );
    assert_eq!(
        status(&t, Kind::Gateway, "infra", "gw")["attachedListenerSets"],
        1
    );
    assert_eq!(
        envoy_listeners(&t)
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["http-80", "tcp-9000"]
    );
    t.apply(&ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ls_key.clone(),
        },
    })
    .unwrap();
    t.recompute();
    assert!(t.status(&ls_key).is_none());
    assert!(status(&t, Kind::TCPRoute, "app", "r").is_null());
    assert_eq!(
        envoy_listeners(&t)
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["http-80"]
    );
}

#[test]
fn http_listeners_are_isolated_by_hostname() {
    // Listener isolation: a host goes to the most specific listener it matches; a route of a
    // less specific listener never serves it, even when the route names that host.
    let t = translate(&format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: any, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra, sectionName: any}}]\n  hostnames: [bar.com, '*.example.com', abc.foo.example.com]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: wild, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra, sectionName: wild}}]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n",
        gateway(
            "  - {name: any, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com', allowedRoutes: {namespaces: {from: All}}}\n  - {name: foo, port: 80, protocol: HTTP, hostname: '*.foo.example.com', allowedRoutes: {namespaces: {from: All}}}\n  - {name: abc, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}\n"
        )
    ));
    let st = status(&t, Kind::Gateway, "infra", "gw");
    assert_eq!(st["listeners"][0]["attachedRoutes"], 1, "{st}");
    let rc = t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .map(|r| {
            envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(r.body.clone())
                .unwrap()
        })
        .unwrap();
    let vhost = |d: &str| {
        rc.virtual_hosts
            .iter()
            .find(|v| v.domains[0] == d)
            .unwrap_or_else(|| panic!("no virtual host {d}: {rc:?}"))
    };
    // bar.com is the catch-all listener's alone.
    assert_eq!(vhost("bar.com").routes.len(), 1);
    // *.example.com belongs to the `wild` listener: only its route.
    assert_eq!(vhost("*.example.com").routes.len(), 1);
    // The more specific listeners without routes answer 404 instead of falling through.
    assert!(vhost("*.foo.example.com").routes.is_empty());
    assert!(vhost("abc.foo.example.com").routes.is_empty());
}

#[test]
fn https_listeners_answer_421_for_other_listeners_hosts() {
    // Each HTTPS listener has its own route configuration (its SNI filter chain's): its own
    // hosts are routed (404 without a route), the port's other listeners' hosts get 421, and
    // a listener with a hostname answers 421 for any other host; the catch-all keeps 404.
    use envoy_types::pb::envoy::config::route::v3::{route, RouteConfiguration};
    let tls = "tls: {certificateRefs: [{name: cert}]}, allowedRoutes: {namespaces: {from: All}}";
    let t = translate(&format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra, sectionName: any}}, {{name: gw, namespace: infra, sectionName: wild}}]\n  hostnames: [a.example.com, x.b.example.com]\n  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n",
        gateway(&format!(
            "  - {{name: any, port: 443, protocol: HTTPS, {tls}}}\n  - {{name: wild, port: 443, protocol: HTTPS, hostname: '*.b.example.com', {tls}}}\n  - {{name: exact, port: 443, protocol: HTTPS, hostname: y.b.example.com, {tls}}}\n"
        ))
    ));
    let rc = |listener: &str| {
        let name = format!("https-443/infra/gw/{listener}");
        t.gateways()["c1/infra/gw"]
            .resources
            .iter()
            .find(|r| r.type_url == type_url::ROUTE && r.name == name)
            .map(|r| RouteConfiguration::decode(r.body.clone()).unwrap())
            .unwrap_or_else(|| panic!("no route configuration {name}"))
    };
    // What a host gets on a listener's connection: "route", "404" or "421".
    let answer = |rc: &RouteConfiguration, domain: &str| -> &'static str {
        let Some(v) = rc.virtual_hosts.iter().find(|v| v.domains[0] == domain) else {
            return "no vhost";
        };
        match v.routes.first().and_then(|r| r.action.as_ref()) {
            None => "404",
            Some(route::Action::DirectResponse(d)) if d.status == 421 => "421",
            Some(_) => "route",
        }
    };
    let any = rc("any");
    assert_eq!(answer(&any, "a.example.com"), "route");
    assert_eq!(answer(&any, "*.b.example.com"), "421");
    assert_eq!(answer(&any, "y.b.example.com"), "421");
    assert_eq!(
        answer(&any, "*"),
        "no vhost",
        "unknown hosts stay 404 on the catch-all"
    );
    let wild = rc("wild");
    assert_eq!(answer(&wild, "x.b.example.com"), "route");
    assert_eq!(answer(&wild, "*.b.example.com"), "404");
    assert_eq!(answer(&wild, "y.b.example.com"), "421");
    assert_eq!(answer(&wild, "*"), "421");
    let exact = rc("exact");
    assert_eq!(answer(&exact, "y.b.example.com"), "404");
    assert_eq!(answer(&exact, "*.b.example.com"), "421");
    assert_eq!(answer(&exact, "*"), "421");
    // Each SNI filter chain names its own route configuration.
    let ls = envoy_listeners(&t);
    let chains = &ls
        .iter()
        .find(|l| l.name == "tcp-443")
        .unwrap()
        .filter_chains;
    assert_eq!(chains.len(), 3);
}

/// The older ListenerSet keeps a contested port and hostname. Creation times are compared as
/// instants: `…:45Z` is older than `…:45.5Z`, which sorts first as text.
#[test]
fn the_older_listener_set_wins_a_conflict() {
    let set = |name: &str, created: &str| {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\nspec:\n  parentRef: {{name: gw}}\n  listeners: [{{name: l, port: 80, protocol: HTTP, hostname: a.com}}]\n")
    };
    let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: eg\n  allowedListeners: {namespaces: {from: Same}}\n  listeners:\n  - {name: http, port: 81, protocol: HTTP}\n";
    let t = translate(&format!(
        "{gw}{}{}",
        set("aa-young", "2025-01-01T00:00:45.5Z"),
        set("zz-old", "2025-01-01T00:00:45Z")
    ));
    let mut good = ok();
    good.insert(1, c("Conflicted", "False", "NoConflicts"));
    let old = status(&t, Kind::ListenerSet, "infra", "zz-old");
    assert_eq!(listener_conds(&old, "l"), good);
    let young = status(&t, Kind::ListenerSet, "infra", "aa-young");
    assert_eq!(
        listener_conds(&young, "l"),
        [
            c("Accepted", "False", "HostnameConflict"),
            c("Conflicted", "True", "HostnameConflict"),
            c("Programmed", "False", "HostnameConflict"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}
