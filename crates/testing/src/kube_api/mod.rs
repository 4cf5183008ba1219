//! A fake Kubernetes API server for tests: plain HTTP/1.1 on 127.0.0.1, speaking the real
//! API closely enough that kube-rs (`Client`, `Api`, `Discovery`, `runtime::watcher`) works
//! against it unchanged, as kube-rs tests itself against a mock service.
//!
//! What it mimics (https://kubernetes.io/docs/reference/using-api/api-concepts/): one global
//! resourceVersion, list pagination (`limit`/`continue`), `resourceVersionMatch`, watches with
//! bookmarks, streaming lists (`sendInitialEvents`), 410 Expired after compaction, optimistic
//! concurrency, the `/status` subresource, merge patch and server-side apply with
//! `managedFields`, legacy discovery, CRDs installed at run time.
//!
//! What it does not: no authentication, admission, validation against schemas, defaulting,
//! finalizers or graceful deletion (delete is immediate), namespace existence checks,
//! deletecollection, JSON patch, protobuf, aggregated discovery, consistent snapshots for
//! paginated lists (a later page shows the current state) and lists at an old exact
//! resourceVersion (410); field ownership treats lists as atomic.
//!
//! Modules: `storage` (objects, revisions, history), `discovery` (registry and discovery
//! documents), `select` (label/field selectors), `patch` (merge patch, apply, managed
//! fields), `watch` (event streams), `server` (routing), `status` (errors).

mod discovery;
mod patch;
mod select;
mod server;
mod status;
mod storage;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

pub use discovery::ResourceInfo;
pub use status::ApiError;

use storage::Store;

/// Changes kept for watches to resume from (the apiserver's watch cache holds ~100 per
/// resource by default; tests make few writes, so a larger bound rarely expires anything
/// unless a test calls `compact`).
const HISTORY: usize = 10_000;
/// Changes a watch may fall behind before it is dropped (and its client resumes).
const WATCH_LAG: usize = 1024;

/// One request as it reached the fake, for tests to assert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The media type of the body (no parameters).
    pub content_type: Option<String>,
    pub field_manager: Option<String>,
}

/// Settings of a fake server.
#[derive(Clone, Debug)]
pub struct FakeApiConfig {
    /// How often an idle watch with `allowWatchBookmarks=true` gets a BOOKMARK (the apiserver
    /// sends them about once a minute).
    pub bookmark_interval: Duration,
}

impl Default for FakeApiConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

struct Shared {
    addr: SocketAddr,
    store: Mutex<Store>,
    closer: tokio::sync::watch::Sender<u64>,
    faults: Mutex<VecDeque<u16>>,
    requests: Mutex<Vec<RequestRecord>>,
    bookmark_interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a test that panicked while holding the lock leaves consistent data: every verb
    // validates before it writes
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(addr: SocketAddr, config: &FakeApiConfig) -> Self {
        let (events, _) = broadcast::channel(WATCH_LAG);
        Shared {
            addr,
            store: Mutex::new(Store::new(HISTORY, events)),
            closer: tokio::sync::watch::channel(0).0,
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            bookmark_interval: config.bookmark_interval,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn log(&self, r: RequestRecord) {
        lock(&self.requests).push(r);
    }

    fn take_fault(&self) -> Option<u16> {
        lock(&self.faults).pop_front()
    }
}

/// The handle of a running fake API server. Dropping it stops the server and ends its
/// watches.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1:0` with the built-in kinds and the namespaces
    /// `default`, `kube-system` and `kube-public`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(FakeApiConfig::default()).await
    }

    pub async fn start_with(config: FakeApiConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr, &config));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let shared = state.clone();
            async move { server::handle(shared, req).await }
        });
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "fake API server stopped");
                }
            },
            tracing::debug_span!("fake_kube_api", %addr),
        ));
        Ok(Self { shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kube-rs client for this server, default namespace `default`.
    pub fn client(&self) -> kube::Result<kube::Client> {
        let uri: axum::http::Uri = self
            .url()
            .parse()
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        kube::Client::try_from(config)
    }

    /// Serves a custom resource from now on and creates its CustomResourceDefinition (a watch
    /// on CRDs sees it ADDED). The status subresource is enabled, as Gateway API and Envoy
    /// Gateway CRDs have it.
    pub fn install_crd(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        self.install_crd_versions(group, &[version], kind, plural, namespaced);
    }

    /// As `install_crd`, served at several versions (the first is the storage and preferred
    /// version).
    pub fn install_crd_versions(
        &self,
        group: &str,
        versions: &[&str],
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        let info = ResourceInfo {
            group: group.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: true,
            custom: true,
        };
        if let Err(e) = self.shared.store().install(info) {
            // only a malformed group/kind can get here; a test passes literals
            panic!("installing {plural}.{group}: {e}");
        }
    }

    /// The Gateway API CRDs Flotilla reads (standard and experimental channels, v1.5).
    pub fn install_gateway_api_crds(&self) {
        const G: &str = "gateway.networking.k8s.io";
        self.install_crd(G, "v1", "GatewayClass", "gatewayclasses", false);
        for (kind, plural) in [
            ("Gateway", "gateways"),
            ("HTTPRoute", "httproutes"),
            ("GRPCRoute", "grpcroutes"),
            ("BackendTLSPolicy", "backendtlspolicies"),
            ("ListenerSet", "listenersets"),
        ] {
            self.install_crd(G, "v1", kind, plural, true);
        }
        self.install_crd_versions(
            G,
            &["v1beta1", "v1"],
            "ReferenceGrant",
            "referencegrants",
            true,
        );
        self.install_crd_versions(G, &["v1", "v1alpha2"], "TLSRoute", "tlsroutes", true);
        self.install_crd(G, "v1alpha2", "TCPRoute", "tcproutes", true);
        self.install_crd(G, "v1alpha2", "UDPRoute", "udproutes", true);
        self.install_crd(
            "gateway.networking.x-k8s.io",
            "v1alpha1",
            "XListenerSet",
            "xlistenersets",
            true,
        );
    }

    /// The Envoy Gateway CRDs (gateway.envoyproxy.io/v1alpha1) and the multicluster
    /// ServiceExport/ServiceImport (multicluster.x-k8s.io/v1alpha1).
    pub fn install_envoy_gateway_crds(&self) {
        const EG: &str = "gateway.envoyproxy.io";
        for (kind, plural) in [
            ("ClientTrafficPolicy", "clienttrafficpolicies"),
            ("BackendTrafficPolicy", "backendtrafficpolicies"),
            ("SecurityPolicy", "securitypolicies"),
            ("EnvoyExtensionPolicy", "envoyextensionpolicies"),
            ("EnvoyPatchPolicy", "envoypatchpolicies"),
            ("HTTPRouteFilter", "httproutefilters"),
            ("Backend", "backends"),
            ("EnvoyProxy", "envoyproxies"),
        ] {
            self.install_crd(EG, "v1alpha1", kind, plural, true);
        }
        self.install_crd(
            "multicluster.x-k8s.io",
            "v1alpha1",
            "ServiceExport",
            "serviceexports",
            true,
        );
        self.install_crd(
            "multicluster.x-k8s.io",
            "v1alpha1",
            "ServiceImport",
            "serviceimports",
            true,
        );
    }

    /// Drops the whole change history, as etcd compaction does: a watch resuming from any
    /// earlier resourceVersion gets the 410 Expired ERROR event, a continue token 410.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch stream (as a server-side watch timeout or an apiserver restart
    /// does); clients resume from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.closer.send_modify(|epoch| *epoch += 1);
    }

    /// The next `n` requests fail with HTTP `status` and the Status body the apiserver gives
    /// with that code (e.g. 429 TooManyRequests, 500 InternalError, 503 ServiceUnavailable).
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.shared.faults).extend(std::iter::repeat_n(status, n));
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Creates or replaces an object (found by its apiVersion and kind; namespace `default`
    /// when a namespaced object names none), whatever its resourceVersion, status included,
    /// as an administrator's `kubectl replace --force` would. Watches see it. Returns the
    /// stored object.
    pub fn put_object(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.store().put(obj)
    }

    /// Deletes an object; watches see it DELETED. `None` if it did not exist.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.shared
            .store()
            .remove(api_version, kind, namespace, name)
    }

    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.shared
            .store()
            .lookup(api_version, kind, namespace, name)
    }

    /// Every stored object of a resource, named `plural` or `plural.group` (as kubectl names
    /// them), in key order.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let store = self.shared.store();
        store
            .resource_named(resource)
            .map(|info| store.objects(&info))
            .unwrap_or_default()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().revision()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.close_watches();
        self.task.abort();
    }
}
