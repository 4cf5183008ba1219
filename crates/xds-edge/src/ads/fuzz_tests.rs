//! The bounded fuzz pass over the ADS stream protocols (run alone with `cargo test fuzz_`,
//! longer with `PROPTEST_CASES=100000`). A delta and a state-of-the-world stream are driven as
//! [`serve`](super::serve) drives them, by arbitrary requests (any type URL, valid, unknown,
//! invalid or huge; names subscribed and unsubscribed, up to past the limits; any nonce; ACKs
//! and NACKs; initial versions) interleaved with changes of the store's state for their gateway
//! and another one. After every step:
//!
//! - the stream's state stays within its bounds (types, names, in-flight responses, versions);
//! - every resource it sends is its own gateway's, exactly as the current snapshot has it, and
//!   every removal names a resource the snapshot does not have;
//! - the response to a NACK never carries again what was rejected, and a second flush with
//!   nothing new sends nothing (no loop).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use flotilla_proto::watch::{GatewayResources, WatchResponse, XdsResource};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    delta, sotw, Ctx, Out, Protocol, Tracked, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE,
    MAX_IN_FLIGHT_PER_TYPE, MAX_NAMES_PER_TYPE, MAX_TYPES_PER_STREAM, MAX_TYPE_URL_LEN, ROUTE_TYPE,
    SECRET_TYPE,
};
use crate::cache::{Cache, GatewaySnapshot};
use crate::stats::StatsInner;

/// `cases` unless `PROPTEST_CASES` asks for another number. The defaults keep the whole fuzz
/// pass of the workspace under a minute in a debug build on 2 cores.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

const GW: &str = "east/ns/gw";
const OTHER: &str = "east/ns/other";
const KNOWN_TYPES: [&str; 5] = [
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
];
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

/// What an `Any` of a resource carries: says whose it is.
fn body(gateway: &str, type_url: &str, name: &str, version: &str) -> Bytes {
    Bytes::from(format!("{gateway}|{type_url}|{name}|{version}"))
}

// ---- the generated steps ----

#[derive(Clone, Debug)]
enum TypeChoice {
    Known(Index),
    /// `type.googleapis.com/fuzz.TN`: valid, of no resources; enough of them to pass the
    /// per-stream limit.
    Unknown(u8),
    Invalid(Index),
}

fn invalid_type_urls() -> Vec<String> {
    vec![
        String::new(),
        "garbage".into(),
        "type.googleapis.com/".into(),
        "type.googleapis.com/a/b".into(),
        format!("type.googleapis.com/{}", "x".repeat(MAX_TYPE_URL_LEN)),
        "type.googleapis.com/\u{0}é\u{feff}".into(),
    ]
}

impl TypeChoice {
    fn url(&self) -> String {
        match self {
            TypeChoice::Known(i) => i.get(&KNOWN_TYPES).to_string(),
            TypeChoice::Unknown(n) => format!("type.googleapis.com/fuzz.T{n}"),
            TypeChoice::Invalid(i) => i.get(&invalid_type_urls()).clone(),
        }
    }
}

#[derive(Clone, Debug)]
enum NameChoice {
    Pool(Index),
    Star,
    Any(String),
}

impl NameChoice {
    fn name(&self) -> String {
        match self {
            NameChoice::Pool(i) => i.get(&NAMES).to_string(),
            NameChoice::Star => "*".into(),
            NameChoice::Any(s) => s.clone(),
        }
    }
}

#[derive(Clone, Debug)]
enum NonceChoice {
    None,
    /// The last response of the request's type.
    Last,
    /// Any response sent so far.
    Sent(Index),
    Any(String),
}

#[derive(Clone, Debug)]
struct Req {
    type_url: TypeChoice,
    subscribe: Vec<NameChoice>,
    unsubscribe: Vec<NameChoice>,
    nonce: NonceChoice,
    nack: Option<(i32, String)>,
    initial: Vec<(NameChoice, String)>,
    /// SotW: the version of the response acknowledged (else a random one).
    right_version: bool,
    /// Names `n0..nN` subscribed on top (past the per-type limit).
    flood: usize,
    /// Initial versions `i0..iN` on top.
    initial_flood: usize,
}

#[derive(Clone, Debug)]
struct Change {
    /// (gateway is ours, type, name, version).
    resources: Vec<(bool, Index, Index, Index)>,
    full_state: bool,
    remove_ours: bool,
    /// A revision not newer than the cache's (ignored once synced).
    stale: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Request(Req),
    Change(Change),
}

fn name_choice() -> impl Strategy<Value = NameChoice> {
    prop_oneof![
        8 => any::<Index>().prop_map(NameChoice::Pool),
        1 => Just(NameChoice::Star),
        1 => ".{0,12}".prop_map(NameChoice::Any),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    let type_url = prop_oneof![
        8 => any::<Index>().prop_map(TypeChoice::Known),
        2 => (0u8..24).prop_map(TypeChoice::Unknown),
        1 => any::<Index>().prop_map(TypeChoice::Invalid),
    ];
    let nonce = prop_oneof![
        3 => Just(NonceChoice::None),
        4 => Just(NonceChoice::Last),
        2 => any::<Index>().prop_map(NonceChoice::Sent),
        1 => "[0-9]{0,3}|.{0,6}".prop_map(NonceChoice::Any),
    ];
    let nack = prop::option::weighted(0.25, (any::<i32>(), ".{0,12}"));
    // Rare (a few cases in a hundred): each costs 65536 names.
    let flood = prop_oneof![
        800 => Just(0usize),
        1 => (MAX_NAMES_PER_TYPE - 2)..(MAX_NAMES_PER_TYPE + 8),
    ];
    let initial_flood = prop_oneof![800 => Just(0usize), 1 => Just(MAX_NAMES_PER_TYPE + 8)];
    (
        type_url,
        prop::collection::vec(name_choice(), 0..4),
        prop::collection::vec(name_choice(), 0..2),
        nonce,
        nack,
        prop::collection::vec(
            (
                name_choice(),
                prop::sample::select(VERSIONS.to_vec()).prop_map(str::to_string),
            ),
            0..3,
        ),
        prop::bool::weighted(0.8),
        flood,
        initial_flood,
    )
        .prop_map(
            |(
                type_url,
                subscribe,
                unsubscribe,
                nonce,
                nack,
                initial,
                right_version,
                flood,
                initial_flood,
            )| Req {
                type_url,
                subscribe,
                unsubscribe,
                nonce,
                nack,
                initial,
                right_version,
                flood,
                initial_flood,
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    (
        prop::collection::vec(
            (
                prop::bool::weighted(0.7),
                any::<Index>(),
                any::<Index>(),
                any::<Index>(),
            ),
            0..10,
        ),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(resources, full_state, remove_ours, stale)| Change {
            resources,
            full_state,
            remove_ours,
            stale,
        })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => req().prop_map(Step::Request),
            1 => change().prop_map(Step::Change),
        ],
        1..24,
    )
}

// ---- the harness: what `serve` does, step by step ----

/// A stream's surroundings: the cache it reads its gateway from, the channel it sends on, and
/// what it has sent so far.
struct Harness {
    cache: Arc<Cache>,
    ctx: Ctx,
    gw_rx: watch::Receiver<GatewaySnapshot>,
    /// The snapshot the stream was last given.
    current: GatewaySnapshot,
    /// Every resource name of every snapshot the stream was given, per type: a resource the
    /// proxy ACKed stays remembered until it ACKs its removal, so these bound what a stream
    /// may remember beyond the initial versions it was told.
    seen: std::collections::HashMap<String, std::collections::HashSet<String>>,
    revision: u64,
    /// Nonces sent, in order, with their type.
    nonces: Vec<(String, String)>,
}

impl Harness {
    fn new() -> Self {
        let stats = Arc::new(StatsInner::default());
        let cache = Arc::new(Cache::new(stats.clone()));
        cache.apply(WatchResponse {
            revision: 1,
            full_state: true,
            gateways: vec![],
            removed_gateways: vec![],
        });
        let mut gw_rx = cache.subscribe(GW);
        let current = gw_rx.borrow_and_update().clone();
        let ctx = Ctx {
            cache: cache.clone(),
            stats,
            proxy_auth: flotilla_net::ProxyAuth::default(),
            shutdown: CancellationToken::new(),
        };
        let mut h = Harness {
            cache,
            ctx,
            gw_rx,
            current,
            seen: Default::default(),
            revision: 1,
            nonces: Vec::new(),
        };
        h.remember_current();
        h
    }

    /// Adds the current snapshot's names to `seen`.
    fn remember_current(&mut self) {
        if let Some(state) = self.current.as_ref() {
            for (type_url, names) in &state.resources {
                let seen = self.seen.entry(type_url.to_string()).or_default();
                seen.extend(names.keys().map(|n| n.to_string()));
            }
        }
    }

    /// Applies a change to the cache; the new snapshot if the stream's gateway changed.
    fn change(&mut self, c: &Change) -> Option<GatewaySnapshot> {
        let mut ours = Vec::new();
        let mut other = Vec::new();
        for (mine, t, n, v) in &c.resources {
            let (gateway, list) = if *mine {
                (GW, &mut ours)
            } else {
                (OTHER, &mut other)
            };
            let (type_url, name, version) = (t.get(&KNOWN_TYPES), n.get(&NAMES), v.get(&VERSIONS));
            list.push(XdsResource {
                type_url: type_url.to_string(),
                name: name.to_string(),
                version: version.to_string(),
                body: body(gateway, type_url, name, version),
            });
        }
        let revision = if c.stale {
            self.revision
        } else {
            self.revision += 1;
            self.revision
        };
        let mut gateways = vec![GatewayResources {
            gateway: OTHER.into(),
            resources: other,
        }];
        if !c.remove_ours {
            gateways.push(GatewayResources {
                gateway: GW.into(),
                resources: ours,
            });
        }
        self.cache.apply(WatchResponse {
            revision,
            full_state: c.full_state,
            gateways,
            removed_gateways: if c.remove_ours {
                vec![GW.into()]
            } else {
                vec![]
            },
        });
        if self.gw_rx.has_changed().unwrap_or(false) {
            self.current = self.gw_rx.borrow_and_update().clone();
            self.remember_current();
            return Some(self.current.clone());
        }
        None
    }

    fn nonce(&self, choice: &NonceChoice, type_url: &str) -> String {
        match choice {
            NonceChoice::None => String::new(),
            NonceChoice::Last => self
                .nonces
                .iter()
                .rev()
                .find(|(t, _)| t == type_url)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            NonceChoice::Sent(i) if self.nonces.is_empty() => i.index(3).to_string(),
            NonceChoice::Sent(i) => i.get(&self.nonces).1.clone(),
            NonceChoice::Any(s) => s.clone(),
        }
    }

    /// The stream's resource of `type_url`/`name` in the current snapshot.
    fn resource(&self, type_url: &str, name: &str) -> Option<Arc<crate::cache::Res>> {
        self.current.as_ref()?.of_type(type_url)?.get(name).cloned()
    }

    /// Every resource of `type_url` in the current snapshot, as sent.
    fn bodies(&self, type_url: &str) -> Vec<Bytes> {
        self.current
            .as_ref()
            .and_then(|s| s.of_type(type_url))
            .map(|m| m.values().map(|r| r.body.clone()).collect())
            .unwrap_or_default()
    }

    fn check_bounds(&self, tracked: &[Tracked]) -> Result<(), TestCaseError> {
        prop_assert!(
            tracked.len() <= MAX_TYPES_PER_STREAM,
            "{} types",
            tracked.len()
        );
        for t in tracked {
            prop_assert!(super::valid_type_url(&t.type_url), "{:?}", t.type_url);
            prop_assert!(
                t.names.len() <= MAX_NAMES_PER_TYPE,
                "{} names",
                t.names.len()
            );
            prop_assert!(
                t.in_flight <= MAX_IN_FLIGHT_PER_TYPE,
                "{} in flight",
                t.in_flight
            );
            let resources = self.seen.get(t.type_url.as_str()).map_or(0, |s| s.len());
            prop_assert!(
                t.versions <= MAX_NAMES_PER_TYPE + resources,
                "{} versions remembered",
                t.versions
            );
        }
        Ok(())
    }
}

fn drain<T>(rx: &mut mpsc::Receiver<Out<T>>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        match r {
            Ok(resp) => out.push(*resp),
            Err(status) => panic!("the stream failed: {status:?}"),
        }
    }
    out
}

/// Flushes as `serve` does; what was sent.
fn flush<P: Protocol>(
    stream: &mut P,
    tx: &mpsc::Sender<Out<P::Response>>,
    rx: &mut mpsc::Receiver<Out<P::Response>>,
) -> Vec<P::Response> {
    assert!(
        futures::executor::block_on(stream.flush(tx)),
        "the stream stopped"
    );
    drain(rx)
}

/// The names a request subscribes: its choices, then the flood.
fn subscribed(r: &Req) -> Vec<String> {
    let mut names: Vec<String> = r.subscribe.iter().map(NameChoice::name).collect();
    names.extend((0..r.flood).map(|i| format!("n{i}")));
    names
}

fn error_detail(r: &Req) -> Option<RpcStatus> {
    r.nack.as_ref().map(|(code, message)| RpcStatus {
        code: *code,
        message: message.clone(),
        details: vec![],
    })
}

// ---- delta ----

fn run_delta(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut stream = <delta::Stream as Protocol>::open(h.ctx.clone(), GW.into(), h.current.clone());
    // Far more than one flush sends (one response per type, and removals apart): never full.
    let (tx, mut rx) = mpsc::channel(1024);
    // What each response carried: nonce -> (type, (name, version) added).
    let mut sent: HashMap<String, (String, Vec<(String, String)>)> = HashMap::new();
    // Unanswered nonces per type, oldest first: the stream remembers the last
    // MAX_IN_FLIGHT_PER_TYPE, so a NACK of an older one names nothing it can reject.
    let mut unanswered: HashMap<String, VecDeque<String>> = HashMap::new();
    for step in steps {
        let mut rejected: Vec<(String, String, String)> = Vec::new();
        match step {
            Step::Request(r) => {
                let type_url = r.type_url.url();
                let nonce = h.nonce(&r.nonce, &type_url);
                // A nonce is answered once: an ACK or NACK of one already answered (or of one
                // the stream no longer remembers) rejects nothing.
                let answered = match sent.get(&nonce) {
                    Some((t, _)) if *t == type_url => sent.remove(&nonce),
                    _ => None,
                };
                if let Some(order) = unanswered.get_mut(&type_url) {
                    order.retain(|n| *n != nonce);
                }
                if let (Some(_), Some((t, added))) = (&r.nack, &answered) {
                    rejected.extend(added.iter().map(|(n, v)| (t.clone(), n.clone(), v.clone())));
                }
                let mut initial: HashMap<String, String> = r
                    .initial
                    .iter()
                    .map(|(n, v)| (n.name(), v.clone()))
                    .collect();
                initial.extend((0..r.initial_flood).map(|i| (format!("i{i}"), "v1".into())));
                <delta::Stream as Protocol>::on_request(
                    &mut stream,
                    DeltaDiscoveryRequest {
                        type_url,
                        resource_names_subscribe: subscribed(r),
                        resource_names_unsubscribe: r
                            .unsubscribe
                            .iter()
                            .map(NameChoice::name)
                            .collect(),
                        initial_resource_versions: initial,
                        response_nonce: nonce,
                        error_detail: error_detail(r),
                        ..Default::default()
                    },
                );
            }
            Step::Change(c) => {
                if let Some(snapshot) = h.change(c) {
                    <delta::Stream as Protocol>::on_snapshot(&mut stream, snapshot);
                }
            }
        }
        let responses = flush(&mut stream, &tx, &mut rx);
        let tracked = stream.tracked();
        h.check_bounds(&tracked)?;
        for resp in &responses {
            check_delta_response(&h, &tracked, resp)?;
            for res in &resp.resources {
                prop_assert!(
                    !rejected.contains(&(
                        resp.type_url.clone(),
                        res.name.clone(),
                        res.version.clone()
                    )),
                    "{} {}@{} sent again right after the proxy rejected it",
                    resp.type_url,
                    res.name,
                    res.version
                );
            }
            h.nonces.push((resp.type_url.clone(), resp.nonce.clone()));
            let order = unanswered.entry(resp.type_url.clone()).or_default();
            order.push_back(resp.nonce.clone());
            if order.len() > MAX_IN_FLIGHT_PER_TYPE {
                if let Some(old) = order.pop_front() {
                    sent.remove(&old);
                }
            }
            sent.insert(
                resp.nonce.clone(),
                (
                    resp.type_url.clone(),
                    resp.resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                ),
            );
        }
        let again = flush(&mut stream, &tx, &mut rx);
        prop_assert!(
            again.is_empty(),
            "a flush with nothing new sent {:?}",
            again
        );
    }
    Ok(())
}

fn check_delta_response(
    h: &Harness,
    tracked: &[Tracked],
    resp: &DeltaDiscoveryResponse,
) -> Result<(), TestCaseError> {
    prop_assert!(
        tracked.iter().any(|t| t.type_url == resp.type_url),
        "{}",
        resp.type_url
    );
    let nonce: u64 = resp
        .nonce
        .parse()
        .map_err(|_| TestCaseError::fail("nonce"))?;
    prop_assert!(
        h.nonces
            .last()
            .is_none_or(|(_, n)| n.parse::<u64>().is_ok_and(|n| n < nonce)),
        "nonces not increasing"
    );
    for res in &resp.resources {
        let ours = h.resource(&resp.type_url, &res.name);
        let ours = ours.ok_or_else(|| {
            TestCaseError::fail(format!(
                "{} {} is not in the gateway's snapshot",
                resp.type_url, res.name
            ))
        })?;
        prop_assert_eq!(&res.version, &*ours.version);
        let any = res
            .resource
            .as_ref()
            .ok_or_else(|| TestCaseError::fail("no Any"))?;
        prop_assert_eq!(&any.type_url, &resp.type_url);
        prop_assert_eq!(&any.value[..], &ours.body[..]);
        let own = format!("{GW}|");
        prop_assert!(any.value.starts_with(own.as_bytes()));
        prop_assert!(!resp.removed_resources.contains(&res.name));
    }
    for name in &resp.removed_resources {
        prop_assert!(
            h.resource(&resp.type_url, name).is_none(),
            "{} {} removed but in the snapshot",
            resp.type_url,
            name
        );
    }
    Ok(())
}

// ---- state of the world ----

fn run_sotw(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut stream = <sotw::Stream as Protocol>::open(h.ctx.clone(), GW.into(), h.current.clone());
    let (tx, mut rx) = mpsc::channel(1024);
    // Per type, the last response's version.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    for step in steps {
        // A NACK of the type's last response that asks for nothing new: (type, version) not to
        // send again.
        let mut rejected = None;
        match step {
            Step::Request(r) => {
                let type_url = r.type_url.url();
                let nonce = h.nonce(&r.nonce, &type_url);
                let names = subscribed(r);
                let last = h.nonces.iter().rev().find(|(t, _)| *t == type_url);
                let before = stream
                    .tracked()
                    .into_iter()
                    .find(|t| t.type_url == type_url);
                if let (Some(_), Some((_, n)), Some(before)) = (&r.nack, last, &before) {
                    let mut wanted: Vec<String> =
                        names.iter().filter(|n| *n != "*").cloned().collect();
                    wanted.sort();
                    wanted.dedup();
                    if *n == nonce && (before.wildcard || wanted == before.names) {
                        rejected = versions
                            .get(&type_url)
                            .map(|v| (type_url.clone(), v.clone()));
                    }
                }
                let version_info = match (r.right_version, versions.get(&type_url)) {
                    (true, Some(v)) => v.clone(),
                    _ => "0000".into(),
                };
                <sotw::Stream as Protocol>::on_request(
                    &mut stream,
                    DiscoveryRequest {
                        version_info,
                        resource_names: names,
                        type_url,
                        response_nonce: nonce,
                        error_detail: error_detail(r),
                        ..Default::default()
                    },
                );
            }
            Step::Change(c) => {
                if let Some(snapshot) = h.change(c) {
                    <sotw::Stream as Protocol>::on_snapshot(&mut stream, snapshot);
                }
            }
        }
        let responses = flush(&mut stream, &tx, &mut rx);
        let tracked = stream.tracked();
        h.check_bounds(&tracked)?;
        for resp in &responses {
            check_sotw_response(&h, &tracked, resp)?;
            prop_assert!(
                rejected != Some((resp.type_url.clone(), resp.version_info.clone())),
                "{} {} sent again right after the proxy rejected it",
                resp.type_url,
                resp.version_info
            );
            h.nonces.push((resp.type_url.clone(), resp.nonce.clone()));
            versions.insert(resp.type_url.clone(), resp.version_info.clone());
        }
        let again = flush(&mut stream, &tx, &mut rx);
        prop_assert!(
            again.is_empty(),
            "a flush with nothing new sent {:?}",
            again
        );
    }
    Ok(())
}

fn check_sotw_response(
    h: &Harness,
    tracked: &[Tracked],
    resp: &DiscoveryResponse,
) -> Result<(), TestCaseError> {
    let t = tracked.iter().find(|t| t.type_url == resp.type_url);
    let t = t.ok_or_else(|| TestCaseError::fail(format!("{} not subscribed", resp.type_url)))?;
    let bodies = h.bodies(&resp.type_url);
    for any in &resp.resources {
        prop_assert_eq!(&any.type_url, &resp.type_url);
        prop_assert!(
            bodies.iter().any(|b| b[..] == any.value[..]),
            "{} sent a resource not in the gateway's snapshot",
            resp.type_url
        );
        let own = format!("{GW}|");
        prop_assert!(any.value.starts_with(own.as_bytes()));
    }
    // The whole set: every resource of a wildcard type, the requested ones of the others.
    let expected = if t.wildcard {
        bodies.len()
    } else {
        t.names
            .iter()
            .filter(|n| h.resource(&resp.type_url, n).is_some())
            .count()
    };
    prop_assert_eq!(resp.resources.len(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn fuzz_ads_delta_stream(steps in steps()) {
        run_delta(&steps)?;
    }

    #[test]
    fn fuzz_ads_sotw_stream(steps in steps()) {
        run_sotw(&steps)?;
    }

    /// Whatever a proxy names its gateway, the answer is a gateway id of three non-empty parts
    /// or INVALID_ARGUMENT with a message.
    #[test]
    fn fuzz_ads_gateway_of_node(cluster in "[a-z/]{0,8}|.{0,12}", missing in prop::bool::weighted(0.1)) {
        let node = envoy_types::pb::envoy::config::core::v3::Node {
            cluster: cluster.clone(),
            ..Default::default()
        };
        match super::gateway_of((!missing).then_some(&node)) {
            Ok(id) => {
                prop_assert!(!missing);
                prop_assert_eq!(&id, &cluster);
                let parts: Vec<&str> = id.split('/').collect();
                prop_assert!(parts.len() == 3 && parts.iter().all(|p| !p.is_empty()));
            }
            Err(status) => {
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                prop_assert!(!status.message().is_empty());
            }
        }
    }
}

// ---- what the fuzz pass found ----

/// A state-of-the-world request's names were not bounded: 16 types of a 4 MiB request of
/// names each held gigabytes for one stream.
#[test]
fn sotw_names_past_the_limit_are_ignored() {
    let h = Harness::new();
    let mut stream = <sotw::Stream as Protocol>::open(h.ctx.clone(), GW.into(), h.current.clone());
    let names: Vec<String> = (0..MAX_NAMES_PER_TYPE + 10)
        .map(|i| format!("n{i}"))
        .collect();
    for nonce in ["", "1"] {
        <sotw::Stream as Protocol>::on_request(
            &mut stream,
            DiscoveryRequest {
                type_url: ROUTE_TYPE.into(),
                resource_names: names.clone(),
                response_nonce: nonce.into(),
                ..Default::default()
            },
        );
        let tracked = stream.tracked();
        assert_eq!(
            tracked[0].names.len(),
            MAX_NAMES_PER_TYPE,
            "nonce {nonce:?}"
        );
    }
}

/// A delta stream's initial versions were not bounded: kept as acked and sent until the proxy
/// ACKed their removal.
#[test]
fn delta_initial_versions_past_the_limit_are_ignored() {
    let h = Harness::new();
    let mut stream = <delta::Stream as Protocol>::open(h.ctx.clone(), GW.into(), h.current.clone());
    <delta::Stream as Protocol>::on_request(
        &mut stream,
        DeltaDiscoveryRequest {
            type_url: CLUSTER_TYPE.into(),
            initial_resource_versions: (0..MAX_NAMES_PER_TYPE + 10)
                .map(|i| (format!("i{i}"), "v1".to_string()))
                .collect(),
            ..Default::default()
        },
    );
    let tracked = stream.tracked();
    assert!(tracked[0].wildcard);
    assert_eq!(tracked[0].versions, MAX_NAMES_PER_TYPE);
}
