//! `flotilla bootstrap`: the Envoy bootstrap for a proxy of one gateway.
//!
//! The proxy names its gateway in `node.cluster` as `CLUSTER/NAMESPACE/NAME`; the edge serves
//! it exactly that gateway's resources. xDS is delta ADS over HTTP/2 to one or more edges
//! (several `--xds` addresses give Envoy failover between edges).

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--gateway must be CLUSTER/NAMESPACE/NAME, got {0:?}")]
    Gateway(String),
    #[error("--xds must be HOST:PORT, got {0:?}")]
    Xds(String),
}

/// Checks a gateway id has three non-empty parts.
pub fn parse_gateway(id: &str) -> Result<(), Error> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Gateway(id.to_string()));
    }
    Ok(())
}

/// [`bootstrap`], carrying the gateway's proxy token when the edges' token key is given.
pub fn with_token_key(
    gateway: &str,
    xds: &[String],
    admin_port: u16,
    node_id: Option<&str>,
    token_key: Option<&std::path::Path>,
) -> anyhow::Result<Value> {
    let mut b = bootstrap(gateway, xds, admin_port, node_id)?;
    if let Some(path) = token_key {
        let key = flotilla_net::ProxyKey::load(path)?;
        set_proxy_token(&mut b, &key.token(gateway));
    }
    Ok(b)
}

/// Makes Envoy send `token` on its xDS stream, as the edge expects from a proxy of the
/// bootstrap's gateway.
pub fn set_proxy_token(bootstrap: &mut Value, token: &str) {
    let svc = &mut bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0];
    svc["initial_metadata"] = json!([{
        "key": flotilla_net::auth::PROXY_TOKEN_HEADER,
        "value": token,
    }]);
}

/// Makes Envoy speak TLS to the edges, trusting `ca` for their certificates (an edge's
/// certificate names the hosts it is reached at), and present `client` (certificate, key)
/// when given: the edge then knows the proxy's gateway from its certificate.
pub fn set_tls(
    bootstrap: &mut Value,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<()> {
    let abs = |p: &std::path::Path| -> anyhow::Result<String> {
        Ok(std::fs::canonicalize(p)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            .display()
            .to_string())
    };
    let mut common = json!({
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": {"filename": abs(ca)?}},
    });
    if let Some((cert, key)) = client {
        common["tls_certificates"] = json!([{
            "certificate_chain": {"filename": abs(cert)?},
            "private_key": {"filename": abs(key)?},
        }]);
    }
    let cluster = &mut bootstrap["static_resources"]["clusters"][0];
    let sni = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut tls = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    });
    if sni.parse::<std::net::IpAddr>().is_err() && !sni.is_empty() {
        tls["sni"] = json!(sni);
    }
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": tls,
    });
    Ok(())
}

/// Builds the bootstrap as JSON (which Envoy reads as YAML too).
pub fn bootstrap(
    gateway: &str,
    xds: &[String],
    admin_port: u16,
    node_id: Option<&str>,
) -> Result<Value, Error> {
    parse_gateway(gateway)?;
    let mut endpoints = Vec::new();
    for addr in xds {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| {
                p.parse::<u16>()
                    .ok()
                    .map(|p| (h.trim_matches(['[', ']']), p))
            })
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| Error::Xds(addr.clone()))?;
        endpoints.push(json!({"endpoint": {"address": {"socket_address": {
            "address": host, "port_value": port}}}}));
    }
    if endpoints.is_empty() {
        return Err(Error::Xds(String::new()));
    }
    Ok(json!({
        "node": {
            "id": node_id.unwrap_or(gateway),
            "cluster": gateway,
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "flotilla_xds"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": "flotilla_xds",
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "flotilla_xds",
                    "endpoints": [{"lb_endpoints": endpoints}],
                },
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    },
                },
            }],
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}},
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_gateway_and_every_edge() {
        let b = bootstrap(
            "east/default/gw",
            &["127.0.0.1:18000".into(), "localhost:18001".into()],
            9901,
            None,
        )
        .unwrap();
        assert_eq!(b["node"]["cluster"], "east/default/gw");
        let eps = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
            ["lb_endpoints"];
        assert_eq!(eps.as_array().unwrap().len(), 2);
        assert_eq!(
            eps[1]["endpoint"]["address"]["socket_address"]["port_value"],
            18001
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }

    #[test]
    fn rejects_bad_input_with_a_message() {
        let e = bootstrap("east/gw", &["127.0.0.1:1".into()], 1, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--gateway must be CLUSTER/NAMESPACE/NAME, got \"east/gw\""
        );
        assert!(bootstrap("a/b/c", &["nope".into()], 1, None).is_err());
    }
}
