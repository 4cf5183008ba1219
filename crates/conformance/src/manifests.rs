//! Turning a test's Kubernetes manifests into what `flotilla standalone` reads: placeholders
//! filled, kinds Flotilla does not take dropped, Gateways given their loopback address, and
//! EndpointSlices written for the echo pods that stand in for Deployments and Pods.

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

pub const GATEWAY_CLASS: &str = "flotilla-conformance";
pub const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";
pub const EPOCH_ANNOTATION: &str = "conformance.flotilla.dev/epoch";

/// One echo pod the manifests ask for (a Deployment replica or a Pod).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// GRPC_ECHO_SERVER is set: the pod serves gRPC (HTTP/2 only).
    pub grpc: bool,
}

pub fn read_docs(dir: &Path, files: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(f);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS)
            .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER);
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if v.is_object() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}
pub fn ns(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("")
}
pub fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}
/// "ns/name" (or "name" when cluster-scoped), as the table writes resource names.
pub fn full_name(v: &Value) -> String {
    if ns(v).is_empty() {
        name(v).to_string()
    } else {
        format!("{}/{}", ns(v), name(v))
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies the table's mutations of one phase to the documents.
pub fn apply_mutations(docs: &mut Vec<Value>, mutations: &[Value], phase: u64) -> Result<()> {
    for m in mutations
        .iter()
        .filter(|m| m["phase"].as_u64() == Some(phase))
    {
        let k = m["kind"].as_str().unwrap_or("");
        let n = m["name"].as_str().unwrap_or("");
        let pos = docs
            .iter()
            .position(|d| kind(d) == k && full_name(d) == n)
            .ok_or_else(|| anyhow!("mutation target {k} {n} not in the manifests"))?;
        match m["op"].as_str() {
            Some("delete") => {
                docs.remove(pos);
            }
            Some("patch") => {
                let d = &mut docs[pos];
                if let Some(p) = m["patch"].as_object() {
                    for (path, val) in p {
                        set_path(d, path, val.clone())?;
                    }
                }
                if let Some(l) = m.get("append_listener") {
                    match d["spec"]["listeners"].as_array_mut() {
                        Some(ls) => ls.push(l.clone()),
                        None => d["spec"]["listeners"] = json!([l]),
                    }
                }
                let desc = m["description"].as_str().unwrap_or("");
                if let Some(rest) = desc.strip_prefix("keep only the listener named '") {
                    let keep = rest.split('\'').next().unwrap_or("");
                    if let Some(ls) = d["spec"]["listeners"].as_array_mut() {
                        ls.retain(|l| l["name"].as_str() == Some(keep));
                    }
                }
                let gen = d["metadata"]["generation"].as_i64().unwrap_or(1);
                d["metadata"]["generation"] = json!(gen + 1);
            }
            other => return Err(anyhow!("unknown mutation op {other:?}")),
        }
    }
    Ok(())
}

/// Sets `a.b[0].c` in `v`.
fn set_path(v: &mut Value, path: &str, val: Value) -> Result<()> {
    let mut cur = v;
    for seg in path.split('.') {
        let (key, idx) = match seg.split_once('[') {
            Some((k, i)) => (
                k,
                Some(
                    i.trim_end_matches(']')
                        .parse::<usize>()
                        .map_err(|e| anyhow!("{path}: {e}"))?,
                ),
            ),
            None => (seg, None),
        };
        cur = &mut cur[key];
        if let Some(i) = idx {
            cur = cur
                .get_mut(i)
                .ok_or_else(|| anyhow!("{path}: index {i} out of range"))?;
        }
    }
    *cur = val;
    Ok(())
}

/// The pods the manifests ask for: each Deployment's replicas (named like
/// `<deployment>-<x>-<y>`) and each Pod.
pub fn pods(docs: &[Value]) -> Vec<PodSpec> {
    let mut out = Vec::new();
    for d in docs {
        match kind(d) {
            "Deployment" | "StatefulSet" | "ReplicaSet" => {
                let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
                let labels = labels(&d["spec"]["template"]["metadata"]["labels"]);
                let grpc = grpc_mode(&d["spec"]["template"]);
                for i in 0..replicas {
                    out.push(PodSpec {
                        namespace: ns(d).to_string(),
                        name: format!("{}-flotilla-{i}", name(d)),
                        labels: labels.clone(),
                        grpc,
                    });
                }
            }
            "Pod" => out.push(PodSpec {
                namespace: ns(d).to_string(),
                name: name(d).to_string(),
                labels: labels(&d["metadata"]["labels"]),
                grpc: grpc_mode(d),
            }),
            _ => {}
        }
    }
    out
}

/// Whether a pod template's containers set GRPC_ECHO_SERVER.
fn grpc_mode(pod: &Value) -> bool {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .any(|e| e["name"].as_str() == Some("GRPC_ECHO_SERVER"))
}

/// What the harness writes for one test.
pub struct Prepared {
    pub docs: Vec<Value>,
    pub pods: Vec<PodSpec>,
    /// Gateway "ns/name" -> (address, listener ports).
    pub gateways: BTreeMap<String, (Ipv4Addr, Vec<u16>)>,
}

/// Prepares a test's documents. `pod_ip` gives each pod its loopback address;
/// `gateway_ip` each Gateway its own; `extra` are documents added to every test (Secrets).
pub fn prepare(
    mut docs: Vec<Value>,
    pod_ip: &mut dyn FnMut(&PodSpec) -> Ipv4Addr,
    gateway_ip: &mut dyn FnMut(&str) -> Ipv4Addr,
    extra: &[Value],
    epoch: u64,
) -> Prepared {
    let pods = pods(&docs);
    let ips: Vec<(PodSpec, Ipv4Addr)> = pods.iter().map(|p| (p.clone(), pod_ip(p))).collect();
    let mut slices = Vec::new();
    let mut gateways = BTreeMap::new();
    let mut has_class = false;

    for d in docs.iter_mut() {
        match kind(d) {
            "Service" => {
                let sel = labels(&d["spec"]["selector"]);
                if sel.is_empty() {
                    continue;
                }
                let members: Vec<&Ipv4Addr> = ips
                    .iter()
                    .filter(|(p, _)| {
                        p.namespace == ns(d) && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    })
                    .map(|(_, ip)| ip)
                    .collect();
                slices.push(slice(d, &members));
            }
            "EndpointSlice" => {
                // Selector-less Services with hand-written slices: the suite fills their
                // endpoints at run time with infra-backend-v1's pod addresses.
                let empty = d["endpoints"].as_array().is_none_or(|a| a.is_empty());
                if empty && d["addressType"].as_str() == Some("IPv4") {
                    let eps: Vec<Value> = ips
                        .iter()
                        .filter(|(p, _)| {
                            p.namespace == "gateway-conformance-infra"
                                && p.labels.get("app").map(String::as_str)
                                    == Some("infra-backend-v1")
                        })
                        .map(|(_, ip)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
                        .collect();
                    d["endpoints"] = json!(eps);
                }
            }
            "GatewayClass" => {
                if name(d) == GATEWAY_CLASS {
                    has_class = true;
                }
                d["spec"]["controllerName"] = json!(CONTROLLER);
            }
            "Gateway" => {
                let ip = gateway_ip(&full_name(d));
                // The harness is the address allocator (each Gateway its loopback address): a
                // Gateway that asks for none, or for an IPAddress without a value, gets it.
                match d["spec"]["addresses"].as_array_mut() {
                    Some(a) if !a.is_empty() => {
                        let unset = a.iter_mut().find(|a| {
                            a["type"].as_str().is_none_or(|t| t == "IPAddress")
                                && a["value"].as_str().is_none_or(str::is_empty)
                        });
                        if let Some(a) = unset {
                            a["value"] = json!(ip.to_string());
                        }
                    }
                    _ => {
                        d["spec"]["addresses"] =
                            json!([{"type": "IPAddress", "value": ip.to_string()}]);
                    }
                }
                let ports = d["spec"]["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
                    .collect();
                gateways.insert(full_name(d), (ip, ports));
            }
            _ => {}
        }
    }
    docs.extend(slices);
    if !has_class {
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER},
        }));
    }
    docs.extend(extra.iter().cloned());
    docs.retain(|d| {
        flotilla_model::Kind::parse(kind(d))
            .is_some_and(|k| k.accepts_api_version(d["apiVersion"].as_str().unwrap_or("")))
    });
    for d in docs.iter_mut() {
        if d["metadata"]["generation"].is_null() {
            d["metadata"]["generation"] = json!(1);
        }
        if !d["metadata"]["annotations"].is_object() {
            d["metadata"]["annotations"] = json!({});
        }
        d["metadata"]["annotations"][EPOCH_ANNOTATION] = json!(epoch.to_string());
    }
    Prepared {
        docs,
        pods,
        gateways,
    }
}

fn slice(svc: &Value, members: &[&Ipv4Addr]) -> Value {
    let ports: Vec<Value> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let target = p["targetPort"]
                .as_u64()
                .or_else(|| p["port"].as_u64())
                .unwrap_or(0);
            let mut o =
                json!({"port": target, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
            if let Some(n) = p["name"].as_str() {
                o["name"] = json!(n);
            }
            if let Some(a) = p["appProtocol"].as_str() {
                o["appProtocol"] = json!(a);
            }
            o
        })
        .collect();
    let eps: Vec<Value> = members
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{}-flotilla", name(svc)),
            "namespace": ns(svc),
            "labels": {"kubernetes.io/service-name": name(svc)},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": eps,
    })
}

/// Standard base64 (for Secret data).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate (openssl CLI) for `hosts`.
pub fn tls_secret(workdir: &Path, namespace: &str, name: &str, hosts: &[&str]) -> Result<Value> {
    let key = workdir.join(format!("{name}.key"));
    let crt = workdir.join(format!("{name}.crt"));
    let san = hosts
        .iter()
        .map(|h| format!("DNS:{h}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=gateway-conformance", "-addext"])
        .arg(format!("subjectAltName={san}"))
        .output()
        .context("running openssl to make a test certificate")?;
    if !out.status.success() {
        return Err(anyhow!(
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64(&std::fs::read(&crt)?),
            "tls.key": base64(&std::fs::read(&key)?),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn services_get_slices_and_gateways_addresses() {
        let docs: Vec<Value> = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a"},
                   "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "a"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "a"},
                   "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
        ];
        let mut n = 0u8;
        let p = prepare(
            docs,
            &mut |_| {
                n += 1;
                Ipv4Addr::new(127, 1, 0, n)
            },
            &mut |_| Ipv4Addr::new(127, 0, 10, 1),
            &[],
            7,
        );
        assert_eq!(p.pods.len(), 2);
        assert!(p.docs.iter().all(|d| kind(d) != "Deployment"));
        let s = p
            .docs
            .iter()
            .find(|d| kind(d) == "EndpointSlice")
            .expect("slice");
        assert_eq!(s["ports"][0]["port"], 3000);
        assert_eq!(s["endpoints"].as_array().map(Vec::len), Some(2));
        let g = p.docs.iter().find(|d| kind(d) == "Gateway").expect("gw");
        assert_eq!(g["spec"]["addresses"][0]["value"], "127.0.10.1");
        assert_eq!(p.gateways["a/gw"].1, vec![80]);
        assert!(p.docs.iter().any(|d| kind(d) == "GatewayClass"));
    }

    #[test]
    fn gateway_address_without_value_gets_the_harness_address() {
        let gw = |addresses: Value| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "a"},
                   "spec": {"gatewayClassName": GATEWAY_CLASS, "addresses": addresses, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
        };
        let addresses = |a: Value| {
            let p = prepare(
                vec![gw(a)],
                &mut |_| Ipv4Addr::new(127, 1, 0, 1),
                &mut |_| Ipv4Addr::new(127, 0, 10, 1),
                &[],
                7,
            );
            let g = p.docs.iter().find(|d| kind(d) == "Gateway").expect("gw");
            g["spec"]["addresses"].clone()
        };
        assert_eq!(
            addresses(json!([{"type": "IPAddress"}])),
            json!([{"type": "IPAddress", "value": "127.0.10.1"}])
        );
        // Given values, and other types, are the Gateway's own.
        let given = json!([{"type": "IPAddress", "value": "1.2.3.4"}, {"type": "Hostname"}]);
        assert_eq!(addresses(given.clone()), given);
    }

    #[test]
    fn mutations_patch_and_delete() {
        let mut docs = vec![
            json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "a", "generation": 1},
                   "spec": {"rules": [{"backendRefs": [{"name": "v1"}]}]}}),
            json!({"kind": "ReferenceGrant", "metadata": {"name": "g", "namespace": "b"}}),
        ];
        let muts = vec![
            json!({"phase": 1, "op": "patch", "kind": "HTTPRoute", "name": "a/r", "patch": {"spec.rules[0].backendRefs[0].name": "v2"}}),
            json!({"phase": 1, "op": "delete", "kind": "ReferenceGrant", "name": "b/g"}),
        ];
        apply_mutations(&mut docs, &muts, 1).expect("apply");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["spec"]["rules"][0]["backendRefs"][0]["name"], "v2");
        assert_eq!(docs[0]["metadata"]["generation"], 2);
    }
}
