//! What the fake serves: the resource registry (built-in kinds and installed CRDs) and the
//! legacy discovery documents built from it (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/{group}`, `/apis/{group}/{version}`), in the shapes of `APIVersions`,
//! `APIGroupList`, `APIGroup` and `APIResourceList`.
//!
//! Aggregated discovery (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=...`) is not
//! served: like an apiserver older than 1.26 the fake answers the legacy document with
//! `Content-Type: application/json`, so `Discovery::run_aggregated` fails and a client falls
//! back to `Discovery::run`.

use serde_json::{json, Value};

/// The verbs a resource serves. `deletecollection` is not implemented, so not advertised.
const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// One served resource: a (group, plural) with the versions it is served at. Objects are
/// stored once per (group, plural), whatever version they were written with, as the apiserver
/// stores one object that every served version shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    /// Served versions; the first is the preferred one.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Whether `/status` is a subresource: then writes to the main resource keep `.status`
    /// and writes to `/status` change nothing else.
    pub status_subresource: bool,
    /// A CustomResourceDefinition (as opposed to a built-in kind).
    pub custom: bool,
}

impl ResourceInfo {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// `services` for the core group, `gateways.gateway.networking.k8s.io` otherwise: the name
    /// messages use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether a DELETE answers the deleted object (else a `Status` of `Success`).
    pub fn delete_answers_object(&self) -> bool {
        self.custom
            || matches!(
                self.plural.as_str(),
                "services" | "namespaces" | "customresourcedefinitions"
            )
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// The entries of this resource in an `APIResourceList`.
    fn api_resources(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        })];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": STATUS_VERBS,
            }));
        }
        out
    }

    /// The resource a CustomResourceDefinition object defines (its served versions, the
    /// storage version first), if the object is well-formed.
    pub fn from_crd(crd: &Value) -> Option<ResourceInfo> {
        let spec = &crd["spec"];
        let mut versions: Vec<&Value> = spec["versions"]
            .as_array()?
            .iter()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .collect();
        versions.sort_by_key(|v| !v["storage"].as_bool().unwrap_or(false));
        let info = ResourceInfo {
            group: spec["group"].as_str()?.to_string(),
            versions: versions
                .iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect(),
            kind: spec["names"]["kind"].as_str()?.to_string(),
            plural: spec["names"]["plural"].as_str()?.to_string(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status_subresource: versions
                .iter()
                .any(|v| v["subresources"].get("status").is_some()),
            custom: true,
        };
        (!info.versions.is_empty() && !info.group.is_empty()).then_some(info)
    }

    /// The status the apiextensions controller gives an accepted CRD (`Established`), which
    /// clients such as kube-runtime's `conditions::is_crd_established` wait for.
    pub fn crd_status(crd: &Value, now: &str) -> Value {
        let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
        let storage: Vec<Value> = crd["spec"]["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["storage"].as_bool().unwrap_or(false))
                    .map(|v| v["name"].clone())
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": storage,
        })
    }

    /// The CustomResourceDefinition object that installs this resource.
    pub fn crd_object(&self) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut version = json!({
                    "name": v,
                    "served": true,
                    "storage": i == 0,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    }},
                });
                if self.status_subresource {
                    version["subresources"] = json!({"status": {}});
                }
                version
            })
            .collect();
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{}.{}", self.plural, self.group)},
            "spec": {
                "group": self.group,
                "names": {
                    "kind": self.kind,
                    "listKind": format!("{}List", self.kind),
                    "plural": self.plural,
                    "singular": self.singular(),
                },
                "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
                "versions": versions,
            },
        })
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        versions: vec![version.into()],
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        status_subresource: status,
        custom: false,
    }
}

/// The built-in kinds the fake serves from the start (those Flotilla's ingest reads, plus
/// Leases for leader election and CRDs themselves).
pub fn builtins() -> Vec<ResourceInfo> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, true),
        builtin("", "v1", "Service", "services", true, true),
        builtin("", "v1", "Secret", "secrets", true, false),
        builtin("", "v1", "ConfigMap", "configmaps", true, false),
        builtin("", "v1", "Event", "events", true, false),
        builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            false,
        ),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        ),
    ]
}

/// `GET /version` (a v1.36 server; the shape of `version.Info`).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": "v1.36.0-flotilla-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`: the core group's versions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; `None` when nothing is served there.
pub fn resource_list<'a>(
    resources: impl Iterator<Item = &'a ResourceInfo>,
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut entries = Vec::new();
    for r in resources.filter(|r| r.group == group && r.serves(version)) {
        entries.extend(r.api_resources());
    }
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}

/// One `APIGroup`: its versions in preference order (the order resources were registered).
fn api_group<'a>(resources: impl Iterator<Item = &'a ResourceInfo>, group: &str) -> Option<Value> {
    let mut versions: Vec<String> = Vec::new();
    for r in resources.filter(|r| r.group == group) {
        for v in &r.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let preferred = versions.first().map(gv)?;
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": preferred,
    }))
}

/// `GET /apis/{group}`.
pub fn group<'a>(
    resources: impl Iterator<Item = &'a ResourceInfo> + Clone,
    group: &str,
) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    api_group(resources, group)
}

/// `GET /apis`: every named group.
pub fn group_list<'a>(resources: impl Iterator<Item = &'a ResourceInfo> + Clone) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for r in resources.clone() {
        if !r.group.is_empty() && !names.contains(&r.group.as_str()) {
            names.push(&r.group);
        }
    }
    let groups: Vec<Value> = names
        .iter()
        .filter_map(|g| api_group(resources.clone(), g))
        .map(|mut g| {
            if let Some(map) = g.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
