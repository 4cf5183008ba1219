//! The fake Kubernetes API server, driven only through kube-rs (`Client`, `Api`, `Discovery`,
//! `runtime::watcher`): what matters is that the real client accepts it.

use std::time::Duration;

use flotilla_testing::kube_api::{FakeApiConfig, FakeApiServer};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (FakeApiServer, Client) {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    let client = server.client().expect("kube client");
    (server, client)
}

fn gateways(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "gateways");
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn gateway(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    }))
    .expect("gateway object")
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}}),
    )
    .expect("config map")
}

async fn next<S, T>(stream: &mut S) -> T
where
    S: Stream<Item = T> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the timeout")
        .expect("the stream goes on")
}

/// The next watcher event that is not an error, with the errors seen before it.
async fn next_ok<S>(stream: &mut S) -> (watcher::Event<ConfigMap>, Vec<watcher::Error>)
where
    S: Stream<Item = watcher::Result<watcher::Event<ConfigMap>>> + Unpin,
{
    let mut errors = Vec::new();
    loop {
        match next(stream).await {
            Ok(ev) => return (ev, errors),
            Err(e) => errors.push(e),
        }
    }
}

fn api_status(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_a_crd_installed_after_start() {
    let (server, client) = start().await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );

    let before = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    assert!(!before.has_group("gateway.networking.k8s.io"));
    let (lease, caps) = before
        .groups()
        .find(|g| g.name() == "coordination.k8s.io")
        .and_then(|g| g.recommended_kind("Lease"))
        .expect("leases are built in");
    assert_eq!(
        (lease.plural.as_str(), caps.scope.clone()),
        ("leases", Scope::Namespaced)
    );

    server.install_gateway_api_crds();
    let after = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let group = after
        .get("gateway.networking.k8s.io")
        .expect("the installed group");
    let (ar, caps) = group.recommended_kind("Gateway").expect("gateways");
    assert_eq!(ar.plural, "gateways");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps
        .subresources
        .iter()
        .any(|(sub, _)| sub.plural == "gateways/status" || sub.plural == "status"));
    let (class, caps) = group
        .recommended_kind("GatewayClass")
        .expect("gatewayclasses");
    assert_eq!(
        (class.plural.as_str(), caps.scope.clone()),
        ("gatewayclasses", Scope::Cluster)
    );
    // ReferenceGrant is served at two versions, v1beta1 preferred
    let versions: Vec<&str> = group.versions().collect();
    assert!(
        versions.contains(&"v1beta1") && versions.contains(&"v1alpha2"),
        "{versions:?}"
    );

    // like a server without aggregated discovery, the fake answers it with the legacy
    // document; kube 4.2 then reads an empty APIGroupDiscoveryList (every field defaults)
    // rather than failing: a client must use `run`, or treat "no groups" as "not supported"
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("parses");
    assert!(!aggregated.has_group("gateway.networking.k8s.io"));
    assert!(server
        .requests()
        .iter()
        .any(|r| r.path == "/apis" && r.method == "GET"));
}

#[tokio::test]
async fn installing_a_crd_is_seen_by_a_crd_watch() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (server, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut stream = watcher(crds, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut stream).await, Ok(watcher::Event::Init)));
    assert!(matches!(
        next(&mut stream).await,
        Ok(watcher::Event::InitDone)
    ));
    server.install_crd("example.com", "v1", "Widget", "widgets", true);
    match next(&mut stream).await {
        Ok(watcher::Event::Apply(crd)) => {
            assert_eq!(crd.name_any(), "widgets.example.com");
            assert_eq!(crd.spec.names.kind, "Widget");
            assert_eq!(crd.spec.scope, "Namespaced");
        }
        other => panic!("expected the CRD applied, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_resource_is_404_until_installed() {
    let (server, client) = start().await;
    let api = gateways(&client);
    let (code, reason) = api_status(api.get("gw").await.expect_err("not served"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _) = api_status(
        api.list(&ListParams::default())
            .await
            .expect_err("not served"),
    );
    assert_eq!(code, 404);

    server.install_gateway_api_crds();
    assert!(api
        .list(&ListParams::default())
        .await
        .expect("served now")
        .items
        .is_empty());
    let (code, reason) = api_status(api.get("gw").await.expect_err("no such object"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn watcher_sees_init_then_apply_and_delete() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server
        .put_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": "default"}}))
        .expect("put");
    let mut stream = watcher(cms, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut stream).await, Ok(watcher::Event::Init)));
    match next(&mut stream).await {
        Ok(watcher::Event::InitApply(cm)) => assert_eq!(cm.name_any(), "one"),
        other => panic!("expected InitApply(one), got {other:?}"),
    }
    assert!(matches!(
        next(&mut stream).await,
        Ok(watcher::Event::InitDone)
    ));

    server
        .put_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "namespace": "default"}, "data": {"a": "b"}}))
        .expect("put");
    match next(&mut stream).await {
        Ok(watcher::Event::Apply(cm)) => {
            assert_eq!(cm.name_any(), "two");
            assert_eq!(
                cm.data.unwrap_or_default().get("a").map(String::as_str),
                Some("b")
            );
        }
        other => panic!("expected Apply(two), got {other:?}"),
    }
    server
        .delete_object("v1", "ConfigMap", "default", "one")
        .expect("deleted");
    match next(&mut stream).await {
        Ok(watcher::Event::Delete(cm)) => assert_eq!(cm.name_any(), "one"),
        other => panic!("expected Delete(one), got {other:?}"),
    }
    // the watcher listed with the defaults kube uses, then watched with bookmarks
    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r.query.contains("limit=500") && !r.query.contains("watch")));
    assert!(requests
        .iter()
        .any(|r| r.query.contains("watch=true") && r.query.contains("allowWatchBookmarks=true")));
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_misses_no_deletion() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for name in ["keep", "gone"] {
        cms.create(&PostParams::default(), &config_map(name))
            .await
            .expect("create");
    }
    let mut stream = watcher(cms, watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match next_ok(&mut stream).await.0 {
            watcher::Event::InitApply(cm) => initial.push(cm.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["gone", "keep"]);

    // the watch ends, a deletion happens while the watcher is away, and the history it
    // would resume from is compacted: the resume gets 410 and the watcher lists again
    server.close_watches();
    server
        .delete_object("v1", "ConfigMap", "default", "gone")
        .expect("deleted");
    server.compact();

    let mut relisted = Vec::new();
    let mut errors = Vec::new();
    let mut saw_init = false;
    loop {
        let (ev, errs) = next_ok(&mut stream).await;
        errors.extend(errs);
        match ev {
            watcher::Event::Init => saw_init = true,
            watcher::Event::InitApply(cm) => relisted.push(cm.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("expected a relist, got {other:?}"),
        }
    }
    assert!(saw_init, "the watcher started over");
    assert_eq!(
        relisted,
        ["keep"],
        "the relist's state lacks the deleted object"
    );
    assert!(
        errors.iter().any(
            |e| matches!(e, watcher::Error::WatchError(s) if s.code == 410 && s.reason == "Expired")
        ),
        "the resume was refused with 410 Expired: {errors:?}"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_an_expired_error_event() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &config_map("a"))
        .await
        .expect("create");
    cms.create(&PostParams::default(), &config_map("b"))
        .await
        .expect("create");
    server.compact();
    let rv = first.resource_version().expect("rv");
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch answers 200")
        .boxed();
    match next(&mut events).await {
        Ok(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected the 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_a_bookmark_and_sends_periodic_bookmarks() {
    let server = FakeApiServer::start_with(FakeApiConfig {
        bookmark_interval: Duration::from_millis(200),
    })
    .await
    .expect("start");
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &config_map("a"))
        .await
        .expect("create");

    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    match next_ok(&mut stream).await.0 {
        watcher::Event::InitApply(cm) => assert_eq!(cm.name_any(), "a"),
        other => panic!("expected InitApply(a), got {other:?}"),
    }
    assert!(matches!(
        next_ok(&mut stream).await.0,
        watcher::Event::InitDone
    ));
    assert!(server
        .requests()
        .iter()
        .any(|r| r.query.contains("sendInitialEvents=true")));

    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let params = WatchParams::default().timeout(5);
    let mut events = cms.watch(&params, &rv).await.expect("watch").boxed();
    match next(&mut events).await {
        Ok(WatchEvent::Bookmark(bm)) => assert_eq!(bm.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn list_paginates_with_limit_and_continue() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(&PostParams::default(), &config_map(&format!("cm-{i}")))
            .await
            .expect("create");
    }
    let mut names = Vec::new();
    let mut pages = 0;
    let mut params = ListParams::default().limit(2);
    let mut first_continue = None;
    loop {
        let page = cms.list(&params).await.expect("page");
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|cm| cm.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                first_continue.get_or_insert(token.clone());
                params = params.continue_token(&token);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);

    // selectors filter before the page is cut
    let selected = cms
        .list(
            &ListParams::default()
                .labels("app=web")
                .fields("metadata.name!=cm-0"),
        )
        .await
        .expect("list");
    assert_eq!(selected.items.len(), 4);

    // a continue token from before a compaction has expired
    cms.create(&PostParams::default(), &config_map("later"))
        .await
        .expect("create");
    server.compact();
    let token = first_continue.expect("a first page had a continue token");
    let (code, reason) = api_status(
        cms.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .expect_err("expired"),
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn lease_update_with_a_stale_resource_version_conflicts() {
    let (_server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "flotilla-agent"}, "spec": {"holderIdentity": "a"}}),
    )
    .expect("lease");
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let (code, reason) = api_status(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .expect_err("exists"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let mut mine = created.clone();
    mine.spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("b".into());
    let taken = leases
        .replace("flotilla-agent", &PostParams::default(), &mine)
        .await
        .expect("fresh rv wins");
    assert_ne!(taken.resource_version(), created.resource_version());

    let mut stale = created;
    stale
        .spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("c".into());
    let (code, reason) = api_status(
        leases
            .replace("flotilla-agent", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let now = leases.get("flotilla-agent").await.expect("get");
    assert_eq!(
        now.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn status_apply_lands_in_status_without_a_new_generation() {
    let (server, client) = start().await;
    server.install_gateway_api_crds();
    let api = gateways(&client);
    let created = api
        .create(&PostParams::default(), &gateway("gw"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let status = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "status": {"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]},
    });
    let pp = PatchParams::apply("flotilla-agent");
    let patched = api
        .patch_status("gw", &pp, &Patch::Apply(&status))
        .await
        .expect("status apply");
    assert_eq!(
        patched.data["status"]["conditions"][0]["type"],
        "Programmed"
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status does not bump the generation"
    );
    let (before, after): (u64, u64) = (
        created
            .resource_version()
            .and_then(|v| v.parse().ok())
            .expect("rv"),
        patched
            .resource_version()
            .and_then(|v| v.parse().ok())
            .expect("rv"),
    );
    assert!(after > before);
    let entry = patched
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("flotilla-agent"))
        .expect("a managedFields entry for the manager");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    assert!(entry
        .fields_v1
        .map(|f| f.0["f:status"]["f:conditions"].is_object())
        .unwrap_or(false));
    let logged = server
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/gateways/gw/status"))
        .expect("logged");
    assert_eq!(
        logged.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(logged.field_manager.as_deref(), Some("flotilla-agent"));

    // the same apply again changes nothing: no new resourceVersion
    let again = api
        .patch_status("gw", &pp, &Patch::Apply(&status))
        .await
        .expect("status apply");
    assert_eq!(again.resource_version(), patched.resource_version());

    // a write to the main resource ignores .status and bumps the generation for spec changes
    let mut spec_change = again.clone();
    spec_change.data["spec"]["gatewayClassName"] = json!("other");
    spec_change.data["status"] = json!({"conditions": []});
    let replaced = api
        .replace("gw", &PostParams::default(), &spec_change)
        .await
        .expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.data["status"]["conditions"][0]["type"],
        "Programmed"
    );
}

#[tokio::test]
async fn apply_conflict_between_managers_needs_force() {
    let (server, client) = start().await;
    server.install_gateway_api_crds();
    let api = gateways(&client);
    let spec = |class: &str| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "labels": {"team": "a"}},
            "spec": {"gatewayClassName": class},
        })
    };
    let first = api
        .patch(
            "gw",
            &PatchParams::apply("alice"),
            &Patch::Apply(spec("eg")),
        )
        .await
        .expect("apply creates");
    assert_eq!(first.data["spec"]["gatewayClassName"], "eg");

    let err = api
        .patch(
            "gw",
            &PatchParams::apply("bob"),
            &Patch::Apply(spec("other")),
        )
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
            assert!(
                status.message.contains("alice")
                    && status.message.contains(".spec.gatewayClassName"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 409, got {other:?}"),
    }
    let forced = api
        .patch(
            "gw",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(spec("other")),
        )
        .await
        .expect("force takes the field");
    assert_eq!(forced.data["spec"]["gatewayClassName"], "other");
    assert_eq!(forced.metadata.generation, Some(2));

    // a merge patch needs no field manager; labels are metadata, not counted by generation
    let merged = api
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(merged.labels().get("x").map(String::as_str), Some("y"));
    assert_eq!(merged.metadata.generation, Some(2), "labels are metadata");
    let owners: Vec<String> = merged
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        owners.contains(&"alice".to_string()),
        "alice still owns the label team: {owners:?}"
    );
    assert!(owners.contains(&"bob".to_string()), "{owners:?}");

    // a custom resource's delete answers the object
    let gone = api
        .delete("gw", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(gone.left().map(|g| g.name_any()).as_deref(), Some("gw"));
}

#[tokio::test]
async fn fail_next_fails_requests_with_the_given_status() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for _ in 0..2 {
        server.fail_next(1, 500);
        let (code, reason) = api_status(
            cms.list(&ListParams::default())
                .await
                .expect_err("injected"),
        );
        assert_eq!((code, reason.as_str()), (500, "InternalError"));
    }
    assert!(cms.list(&ListParams::default()).await.is_ok());
    server.fail_next(1, 403);
    let (code, reason) = api_status(
        cms.delete("nope", &DeleteParams::default())
            .await
            .map(|_| ())
            .expect_err("injected"),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    let (code, _) = api_status(
        cms.delete("nope", &DeleteParams::default())
            .await
            .map(|_| ())
            .expect_err("no object"),
    );
    assert_eq!(code, 404);
    assert_eq!(server.requests().len(), 5);

    // kube's client retries 429, 503 and 504 itself (up to 15 times, from 5 ms): a few such
    // failures are invisible to the caller, and the log shows the retries
    server.fail_next(2, 503);
    assert!(cms.list(&ListParams::default()).await.is_ok());
    assert_eq!(server.requests().len(), 8);
}

#[tokio::test]
async fn all_namespaces_list_and_delete_return_the_object() {
    let (server, client) = start().await;
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    other
        .create(&PostParams::default(), &config_map("x"))
        .await
        .expect("create");
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    default
        .create(&PostParams::default(), &config_map("y"))
        .await
        .expect("create");
    let all: Api<ConfigMap> = Api::all(client);
    let names: Vec<String> = all
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["y", "x"], "key order: namespace, then name");
    let deleted = other
        .delete("x", &DeleteParams::default())
        .await
        .expect("delete");
    // a ConfigMap's delete answers a Status (the registry does not return the object)
    let status = deleted.right().expect("a Status, not the object");
    assert_eq!(
        status.details.map(|d| (d.name, d.kind)),
        Some(("x".into(), "configmaps".into()))
    );
    assert_eq!(server.objects("configmaps").len(), 1);
    let _: Vec<ConfigMap> = all
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .collect();
    let stream = watcher(all, watcher::Config::default()).boxed();
    let events: Vec<_> = stream.take(3).try_collect().await.expect("events");
    assert!(matches!(events[1], watcher::Event::InitApply(ref c) if c.name_any() == "y"));
}

#[tokio::test]
async fn a_crd_created_through_the_api_is_served_until_deleted() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    let (_server, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "serviceimports.multicluster.x-k8s.io"},
        "spec": {
            "group": "multicluster.x-k8s.io",
            "names": {"kind": "ServiceImport", "plural": "serviceimports", "singular": "serviceimport", "listKind": "ServiceImportList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .expect("crd");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let established = await_condition(
        crds.clone(),
        "serviceimports.multicluster.x-k8s.io",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .expect("in time")
        .expect("established");

    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .get("multicluster.x-k8s.io")
        .and_then(|g| g.recommended_kind("ServiceImport"))
        .expect("served");
    let imports: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    assert!(
        !caps.subresources.is_empty(),
        "status subresource from the CRD"
    );
    let si: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "web"}, "spec": {"type": "ClusterSetIP"},
    }))
    .expect("si");
    imports
        .create(&PostParams::default(), &si)
        .await
        .expect("create CR");

    let mut stream = watcher(imports.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(watcher::Event::InitDone)) {
        seen.push(next(&mut stream).await.expect("event"));
    }
    assert!(seen
        .iter()
        .any(|e| matches!(e, watcher::Event::InitApply(o) if o.name_any() == "web")));

    // the watch is open once it sees a change
    let mut later = si.clone();
    later.metadata.name = Some("zz".into());
    imports
        .create(&PostParams::default(), &later)
        .await
        .expect("create CR");
    assert!(
        matches!(next(&mut stream).await, Ok(watcher::Event::Apply(o)) if o.name_any() == "zz")
    );

    // deleting the CRD deletes its objects and stops serving the resource
    crds.delete(
        "serviceimports.multicluster.x-k8s.io",
        &DeleteParams::default(),
    )
    .await
    .expect("delete CRD");
    let mut deleted = Vec::new();
    for _ in 0..2 {
        match next(&mut stream).await {
            Ok(watcher::Event::Delete(o)) => deleted.push(o.name_any()),
            other => panic!("expected the CRs deleted, got {other:?}"),
        }
    }
    assert_eq!(deleted, ["web", "zz"]);
    let (code, _) = api_status(
        imports
            .list(&ListParams::default())
            .await
            .expect_err("gone"),
    );
    assert_eq!(code, 404);
}
