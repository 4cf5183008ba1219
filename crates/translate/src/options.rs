//! Translator feature switches, as Envoy Gateway's translator has them (its `Translator` struct
//! fields set from the Envoy Gateway configuration).
//!
//! Read from JSON with Envoy Gateway's corpus names (`{"backend": true, "runningOnHost": false}`);
//! fields not listed here (`luaDisabled`, ...) are accepted and ignored: Flotilla does not
//! implement what they switch.

use serde::Deserialize;

/// Feature switches of a [`crate::Translator`]. `Default` is Flotilla's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TranslateOptions {
    /// The Envoy Gateway `Backend` API is enabled (Envoy Gateway's
    /// `extensionApis.enableBackend`). Envoy Gateway defaults it off; Flotilla has no separate
    /// switch for its extension APIs and defaults it on. When off, every Backend is refused
    /// ("not enabled in Envoy Gateway Config") and backendRefs of kind Backend fail with
    /// UnsupportedValue.
    pub backend: bool,
    /// The data plane runs on the host (Envoy Gateway's Host infrastructure provider), so a
    /// Backend may name a loopback address or a single-label hostname (`localhost`). Default off
    /// (Kubernetes infrastructure: such endpoints are refused).
    pub running_on_host: bool,
    /// A BackendTLSPolicy may take its CA from an SDS server (a `gateway.envoyproxy.io/sds`
    /// Secret; Envoy Gateway's `sds` switch). Envoy Gateway defaults it off; Flotilla, which
    /// configures the SDS cluster itself, defaults it on.
    pub sds: bool,
    /// Where Envoys reach the rate limit service (`host:port`, one per instance; Envoy
    /// balances over them): Envoy Gateway takes it from its EnvoyGateway configuration
    /// (`rateLimit.backend`), Flotilla from `--ratelimit-service` (the store) or its embedded
    /// service (standalone). It becomes the `ratelimit_cluster` of every gateway that has a
    /// global rate limit. Every store replica must be given the same list: it is part of the
    /// translated output.
    pub rate_limit_service: Vec<String>,
    /// The CA bundle (PEM) of the rate limit service's certificate: when set, Envoys reach
    /// [`Self::rate_limit_service`] over TLS, and accept only a certificate this CA issued for
    /// one of the configured hosts (Envoy Gateway's `rateLimit.backend.redis.tls` is the
    /// service's own business; its Envoy → service TLS is a CA as well). Like the list, part
    /// of the translated output: every store replica must be given the same bundle.
    pub rate_limit_service_ca: Option<String>,
    /// Envoy Gateway's `globalRateLimit` switch (its corpus flags): global rate limits are
    /// accepted without a [`Self::rate_limit_service`] (statuses only: with no service, no
    /// gateway gets the rate limit filter). Global rate limits are accepted when either is set;
    /// otherwise a BackendTrafficPolicy with one is refused, as Envoy Gateway refuses it when
    /// its rate limit service is not configured.
    pub global_rate_limit: bool,
    /// When the rate limit service cannot answer, Envoy refuses the request (Envoy Gateway's
    /// `rateLimit.failClosed`); by default it lets it through.
    pub rate_limit_fail_closed: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            backend: true,
            running_on_host: false,
            sds: true,
            rate_limit_service: Vec::new(),
            rate_limit_service_ca: None,
            global_rate_limit: false,
            rate_limit_fail_closed: false,
        }
    }
}

impl TranslateOptions {
    /// Parses options from JSON (missing fields take their defaults, unknown fields are ignored).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Checks what the translator cannot refuse per resource: a rate limit service CA bundle
    /// with no certificate (Envoy would refuse the cluster of every gateway with a global
    /// rate limit).
    pub fn check(&self) -> Result<(), String> {
        match &self.rate_limit_service_ca {
            Some(ca) if !crate::tls::is_pem_certificate(ca.as_bytes()) => {
                Err("no PEM certificate in the rate limit service CA bundle".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether a BackendTrafficPolicy may have a global rate limit.
    pub fn global_rate_limit_enabled(&self) -> bool {
        self.global_rate_limit || !self.rate_limit_service.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_corpus_names() {
        assert_eq!(
            TranslateOptions::from_json("{}").unwrap(),
            TranslateOptions::default()
        );
        let o = TranslateOptions::from_json(
            r#"{"backend": false, "runningOnHost": true, "globalRateLimit": true, "sds": false}"#,
        )
        .unwrap();
        assert!(!o.backend);
        assert!(o.running_on_host);
        assert!(o.global_rate_limit_enabled());
        assert!(o.rate_limit_service.is_empty());
        assert!(!TranslateOptions::default().global_rate_limit_enabled());
        assert!(TranslateOptions::from_json(r#"{"backend": "yes"}"#).is_err());
    }

    const INPUT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: lo, namespace: app}
spec: {endpoints: [{ip: {address: 127.0.0.3, port: 3000}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: local, namespace: app}
spec: {endpoints: [{fqdn: {hostname: localhost, port: 3000}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: lo}]
"#;

    fn translate(opts: TranslateOptions) -> crate::Translator {
        let mut t = crate::Translator::with_options(opts);
        let (rs, errs) = flotilla_model::parse_documents("test.yaml", INPUT, "c1");
        assert!(errs.is_empty(), "{errs:?}");
        for r in rs {
            t.apply(&flotilla_model::ResourceEvent {
                cluster: "c1".into(),
                source: "test".into(),
                body: flotilla_model::EventBody::Upsert {
                    key: r.key,
                    object: r.raw,
                    origin: None,
                },
            })
            .unwrap();
        }
        t.recompute();
        t
    }

    fn status(t: &crate::Translator, kind: flotilla_model::Kind, name: &str) -> serde_json::Value {
        t.status(&flotilla_model::ResourceKey::new("c1", kind, "app", name))
            .cloned()
            .expect("a status")
    }

    fn resolved_refs(t: &crate::Translator) -> serde_json::Value {
        let st = status(t, flotilla_model::Kind::HTTPRoute, "r");
        st["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .cloned()
            .expect("ResolvedRefs")
    }

    #[test]
    fn loopback_and_single_label_backends_need_the_host_infrastructure() {
        use flotilla_model::Kind;
        let k8s = translate(TranslateOptions::default());
        let lo = &status(&k8s, Kind::Backend, "lo")["conditions"][0];
        assert_eq!(lo["type"], "Invalid");
        assert_eq!(
            lo["message"],
            "The Backend was not accepted: IP address 127.0.0.3 in the loopback range is only \
             supported when using the Host infrastructure"
        );
        assert_eq!(
            status(&k8s, Kind::Backend, "local")["conditions"][0]["message"],
            "The Backend was not accepted: hostname localhost should be a domain with at least \
             two segments separated by dots"
        );
        assert_eq!(resolved_refs(&k8s)["status"], "False");

        let host = translate(TranslateOptions {
            running_on_host: true,
            ..Default::default()
        });
        for name in ["lo", "local"] {
            let c = &status(&host, Kind::Backend, name)["conditions"][0];
            assert_eq!(c["type"], "Accepted", "{name}");
            assert_eq!(c["message"], "The Backend was accepted", "{name}");
        }
        assert_eq!(resolved_refs(&host)["status"], "True");
    }

    #[test]
    fn a_disabled_backend_api_refuses_backends_and_their_refs() {
        let t = translate(TranslateOptions {
            backend: false,
            running_on_host: true,
            ..Default::default()
        });
        let c = &status(&t, flotilla_model::Kind::Backend, "local")["conditions"][0];
        assert_eq!(c["type"], "Invalid");
        assert_eq!(c["reason"], "Accepted");
        assert_eq!(c["status"], "False");
        assert_eq!(
            c["message"],
            "The Backend was not accepted since Backend is not enabled in Envoy Gateway Config"
        );
        let rr = resolved_refs(&t);
        assert_eq!(rr["status"], "False");
        assert_eq!(rr["reason"], "UnsupportedValue");
        assert_eq!(
            rr["message"],
            "Failed to process route rule 0 backendRef 0: Backend is disabled in Envoy Gateway \
             configuration."
        );
    }
}
