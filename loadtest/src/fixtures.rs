//! The synthetic world a run serves: per cluster a directory of YAML (GatewayClass, Gateways,
//! Services with EndpointSlices, HTTPRoutes), every route carrying a change marker in its
//! path; and the poison inputs of the chaos mode.

use crate::decode::{marker_path, Marker};
use std::path::{Path, PathBuf};

/// Namespace of every generated object.
pub const NS: &str = "lt";

#[derive(Clone, Debug)]
pub struct GatewayInfo {
    /// Index among all gateways of the run (the recorder's gateway index).
    pub index: u32,
    pub cluster: usize,
    pub name: String,
    /// `CLUSTER/NAMESPACE/NAME`, what proxies put in `node.cluster`.
    pub id: String,
    /// The port the HTTP listener binds (a real Envoy of the gateway binds it).
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct ClusterInfo {
    pub name: String,
    pub dir: PathBuf,
    pub gateways: Vec<u32>,
    /// Names of the Services routes point at.
    pub services: Vec<String>,
    /// Generation of each service's endpoints (bumped by churn).
    pub service_gen: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub id: u32,
    pub cluster: usize,
    pub gateway: u32,
    pub name: String,
    pub service: usize,
    pub seq: u64,
    pub alive: bool,
}

#[derive(Clone, Debug, Default)]
pub struct World {
    pub clusters: Vec<ClusterInfo>,
    pub gateways: Vec<GatewayInfo>,
    pub routes: Vec<RouteInfo>,
}

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

impl World {
    /// Adds a cluster with `gateways` gateways (ports from `port`), `services` services and
    /// `routes` routes per gateway; its files will live in `dir`.
    pub fn add_cluster(
        &mut self,
        name: &str,
        dir: PathBuf,
        gateways: u32,
        services: u32,
        routes: u32,
        port: &mut dyn FnMut() -> u16,
    ) -> usize {
        let ci = self.clusters.len();
        let mut gw_idx = Vec::new();
        for g in 0..gateways {
            let index = self.gateways.len() as u32;
            let gname = format!("g{g}");
            self.gateways.push(GatewayInfo {
                index,
                cluster: ci,
                id: format!("{name}/{NS}/{gname}"),
                name: gname,
                port: port(),
            });
            gw_idx.push(index);
        }
        self.clusters.push(ClusterInfo {
            name: name.to_string(),
            dir,
            gateways: gw_idx.clone(),
            services: (0..services).map(|s| format!("svc{s}")).collect(),
            service_gen: vec![0; services as usize],
        });
        for &g in &gw_idx {
            for r in 0..routes {
                self.add_route(
                    ci,
                    g,
                    format!("{}-r{r}", self.gateways[g as usize].name),
                    r as usize,
                );
            }
        }
        ci
    }

    /// A new route (not yet written); returns its id.
    pub fn add_route(&mut self, cluster: usize, gateway: u32, name: String, service: usize) -> u32 {
        let id = self.routes.len() as u32;
        let n = self.clusters[cluster].services.len().max(1);
        self.routes.push(RouteInfo {
            id,
            cluster,
            gateway,
            name,
            service: service % n,
            seq: 1,
            alive: true,
        });
        id
    }

    pub fn marker(&self, route: u32) -> Marker {
        Marker {
            route,
            seq: self.routes[route as usize].seq,
        }
    }

    /// Gateway + listener YAML.
    pub fn gateway_yaml(&self, g: u32) -> String {
        let gw = &self.gateways[g as usize];
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {}, namespace: {NS}}}
spec:
  gatewayClassName: flotilla
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
",
            gw.name, gw.port
        )
    }

    pub fn class_yaml() -> &'static str {
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: flotilla}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
"
    }

    /// Service + EndpointSlice; the endpoint port moves with the service's generation.
    pub fn service_yaml(&self, cluster: usize, s: usize) -> String {
        let c = &self.clusters[cluster];
        let name = &c.services[s];
        let port = 30_000 + (s as u32 * 10 + c.service_gen[s]) % 10_000;
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"
        )
    }

    /// The HTTPRoute of `route` at its current seq: its path prefix is its marker.
    pub fn route_yaml(&self, route: u32) -> String {
        let r = &self.routes[route as usize];
        let gw = &self.gateways[r.gateway as usize];
        let svc = &self.clusters[r.cluster].services[r.service];
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {}}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {}}}}}]
    backendRefs: [{{name: {svc}, port: 80}}]
",
            r.name,
            gw.name,
            marker_path(r.id, r.seq)
        )
    }

    pub fn route_file(&self, route: u32) -> PathBuf {
        let r = &self.routes[route as usize];
        self.clusters[r.cluster]
            .dir
            .join("routes")
            .join(format!("{}.yaml", r.name))
    }

    pub fn service_file(&self, cluster: usize, s: usize) -> PathBuf {
        self.clusters[cluster]
            .dir
            .join("services")
            .join(format!("{}.yaml", self.clusters[cluster].services[s]))
    }

    /// Every file of cluster `cluster` as (path, text).
    pub fn files(&self, cluster: usize) -> Vec<(PathBuf, String)> {
        let c = &self.clusters[cluster];
        let mut out = vec![(c.dir.join("class.yaml"), Self::class_yaml().to_string())];
        for &g in &c.gateways {
            out.push((
                c.dir
                    .join("gateways")
                    .join(format!("{}.yaml", self.gateways[g as usize].name)),
                self.gateway_yaml(g),
            ));
        }
        for s in 0..c.services.len() {
            out.push((self.service_file(cluster, s), self.service_yaml(cluster, s)));
        }
        for r in self
            .routes
            .iter()
            .filter(|r| r.cluster == cluster && r.alive)
        {
            out.push((self.route_file(r.id), self.route_yaml(r.id)));
        }
        out
    }

    /// Every file of every cluster, written atomically.
    pub fn write_all(&self, cluster: usize) -> Result<(), WriteError> {
        for (path, text) in self.files(cluster) {
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes via a hidden temp file + rename, as editors and `kubectl`-like tools do (the agent
/// ignores hidden files, so it never reads half a file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

pub fn remove_file(path: &Path) -> Result<(), WriteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WriteError {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The poison inputs of the chaos mode, as file contents (garbage is published, not written).
pub mod poison {
    use super::NS;

    /// A ConfigMap with a field nested 122 `[` deep.
    pub fn deep_configmap(n: u32) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep-{n}, namespace: {NS}}}\ndata: {{k: v}}\nnested: {}{}\n",
            "[".repeat(122),
            "]".repeat(122)
        )
    }

    /// A YAML mapping with a duplicate key.
    pub fn duplicate_key(n: u32) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup-{n}\n  name: dup-{n}-again\n  namespace: {NS}\ndata: {{k: v}}\n")
    }

    /// A valid ConfigMap behind a UTF-8 byte order mark.
    pub fn bom(n: u32) -> String {
        format!("\u{feff}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bom-{n}, namespace: {NS}}}\ndata: {{k: v}}\n")
    }

    /// A Gateway whose name contains '/', which would make gateway ids ambiguous.
    pub fn slash_gateway(_n: u32) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: a/b, namespace: {NS}}}\nspec:\n  gatewayClassName: flotilla\n  listeners:\n  - {{name: http, port: 1, protocol: HTTP}}\n")
    }

    /// A ConfigMap over Kubernetes' 1.5 MiB object limit.
    pub fn huge(n: u32) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: huge-{n}, namespace: {NS}}}\ndata:\n  big: \"{}\"\n",
            "x".repeat(1536 * 1024 + 1024)
        )
    }

    /// An HTTPRoute on `gateway` whose path regex does not compile.
    pub fn bad_regex(n: u32, gateway: &str) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: badregex-{n}, namespace: {NS}}}\nspec:\n  parentRefs: [{{name: {gateway}}}]\n  rules:\n  - matches: [{{path: {{type: RegularExpression, value: \"/([a-z\"}}}}]\n    backendRefs: [{{name: svc0, port: 80}}]\n")
    }

    /// Bytes that are neither JSON nor UTF-8.
    pub fn garbage(n: u32) -> Vec<u8> {
        let mut v = vec![0xff, 0xfe, 0x00, b'{', 0x80];
        v.extend_from_slice(format!("garbage-{n}").as_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::{parse_documents, Kind};

    fn world() -> World {
        let mut w = World::default();
        let mut p = 10_000;
        w.add_cluster("east", PathBuf::from("/tmp/x"), 2, 3, 4, &mut || {
            p += 1;
            p
        });
        w
    }

    #[test]
    fn generated_files_parse_as_the_agent_parses_them() {
        let w = world();
        assert_eq!(w.gateways.len(), 2);
        assert_eq!(w.routes.len(), 8);
        let mut kinds = std::collections::BTreeMap::new();
        for (path, text) in w.files(0) {
            let (res, errs) = parse_documents(&path.display().to_string(), &text, "east");
            assert!(errs.is_empty(), "{path:?}: {errs:?}");
            for r in res {
                *kinds.entry(r.key.kind).or_insert(0) += 1;
            }
        }
        assert_eq!(kinds[&Kind::GatewayClass], 1);
        assert_eq!(kinds[&Kind::Gateway], 2);
        assert_eq!(kinds[&Kind::Service], 3);
        assert_eq!(kinds[&Kind::EndpointSlice], 3);
        assert_eq!(kinds[&Kind::HTTPRoute], 8);
        assert!(w.route_yaml(5).contains("/lt/5/1"));
        assert_eq!(w.gateways[1].id, "east/lt/g1");
    }

    #[test]
    fn poison_inputs_are_what_they_claim() {
        let parse = |t: &str| parse_documents("p.yaml", t, "east");
        // The ConfigMap that used to kill every store: the model refuses it where it enters.
        let (ok, errs) = parse(&poison::deep_configmap(1));
        assert_eq!((ok.len(), errs.len()), (0, 1), "{errs:?}");
        assert!(errs[0].message.contains("nested deeper"), "{errs:?}");
        assert!(poison::deep_configmap(1).contains(&"[".repeat(122)));
        // Whether the model accepts a duplicate key is the model's call (the fold follows it);
        // the input must really have one.
        assert_eq!(poison::duplicate_key(1).matches("  name: dup-1").count(), 2);
        let (ok, errs) = parse(&poison::huge(1));
        assert_eq!(ok.len(), 0, "{errs:?}");
        let (ok, _) = parse(&poison::bad_regex(1, "g0"));
        assert_eq!(ok.len(), 1);
        assert!(poison::bom(1).starts_with('\u{feff}'));
        assert!(std::str::from_utf8(&poison::garbage(1)).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&poison::garbage(1)).is_err());
    }

    #[test]
    fn atomic_write_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.yaml");
        write_atomic(&p, b"x").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert!(!d.path().join("a/.b.yaml.tmp").exists());
        remove_file(&p).unwrap();
        remove_file(&p).unwrap();
    }
}
