//! Authentication, authorisation, redaction and the body limit, over real HTTP: the router is
//! served on a loopback port and called with reqwest.

use super::{state_of, TEXT};
use crate::auth::{token_digest, RELOAD_INTERVAL};
use crate::redact::REDACTED;
use crate::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789abcdef0123456789";
const READER: &str = "reader-token-0123456789abcdef012345678";
const LATER: &str = "later-token-0123456789abcdef0123456789";

/// base64 of a PEM private key, as a kubernetes.io/tls Secret holds it.
const KEY_B64: &str =
    "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5CnRvcHNlY3JldAotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==";
const CRT_B64: &str = "Y2VydGlmaWNhdGU=";

fn secret_yaml() -> String {
    format!(
        "{TEXT}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls, namespace: app}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {CRT_B64}, tls.key: {KEY_B64}}}\n"
    )
}

/// An [`Admin`] that records the calls it takes.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn took(&self, call: String) -> AdminFuture<'_> {
        self.0.lock().expect("lock").push(call);
        Box::pin(async { Ok(json!({"ok": true})) })
    }
}

impl Admin for Recorder {
    fn members(&self) -> Value {
        json!({"voters": [1]})
    }
    fn add_learner(&self, id: u64, addr: String) -> AdminFuture<'_> {
        self.took(format!("add_learner {id} {addr}"))
    }
    fn promote(&self, id: u64) -> AdminFuture<'_> {
        self.took(format!("promote {id}"))
    }
    fn remove(&self, id: u64) -> AdminFuture<'_> {
        self.took(format!("remove {id}"))
    }
    fn snapshot(&self, purge: bool) -> AdminFuture<'_> {
        self.took(format!("snapshot {purge}"))
    }
}

/// A running API on a loopback port.
struct Server {
    base: String,
    admin: Arc<Recorder>,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Server {
    async fn start(auth: Auth) -> Server {
        Self::start_with(auth, |r| r).await
    }

    /// `wrap` adds layers around the router (what a TLS listener would insert).
    async fn start_with(auth: Auth, wrap: impl FnOnce(Router) -> Router) -> Server {
        let admin = Arc::new(Recorder::default());
        let app = wrap(router(
            state_of(true, &secret_yaml()),
            Some(admin.clone()),
            auth,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
        });
        Server {
            base,
            admin,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _stop: stop.drop_guard(),
        }
    }

    /// (status, WWW-Authenticate, JSON body) of one call.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Option<String>, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_string());
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, challenge, v)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (code, _, v) = self.call(reqwest::Method::GET, path, token, None).await;
        (code, v)
    }

    /// Every admin call, with a valid body: their statuses.
    async fn admin_calls(&self, token: Option<&str>) -> Vec<(u16, Value)> {
        use reqwest::Method;
        let mut out = Vec::new();
        for (m, path, body) in [
            (
                Method::POST,
                "/api/v1/members/learners",
                Some(json!({"id": 4, "addr": "127.0.0.1:7004"})),
            ),
            (
                Method::POST,
                "/api/v1/members/voters",
                Some(json!({"id": 4})),
            ),
            (Method::DELETE, "/api/v1/members/4", None),
            (Method::POST, "/api/v1/snapshot?purge=true", None),
        ] {
            let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
            let (code, _, v) = self.call(m, path, token, body).await;
            out.push((code, v));
        }
        out
    }
}

fn tokens_file(dir: &tempfile::TempDir, text: &str) -> TokenFile {
    let path = dir.path().join("tokens");
    std::fs::write(&path, text).expect("write tokens");
    TokenFile::load(&path).expect("valid tokens file")
}

/// Admin as a token, reader as a digest.
fn both_roles() -> String {
    format!(
        "# test tokens\nadmin alice {ADMIN}\n\nreader ci sha256:{}\n",
        hex::encode(token_digest(READER))
    )
}

const SECRET: &str = "/api/v1/resources/east/Secret/app/tls";

#[tokio::test]
async fn without_a_valid_token_only_the_probes_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(Auth::none().with_tokens(tokens_file(&dir, &both_roles()))).await;
    for path in [
        "/api/v1/resources",
        SECRET,
        "/api/v1/revision",
        "/api/v1/members",
    ] {
        let (code, challenge, v) = s.call(reqwest::Method::GET, path, None, None).await;
        assert_eq!(code, 401, "{path}: {v}");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{path}: {challenge:?}"
        );
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("Bearer")),
            "{v}"
        );
    }
    let (code, challenge, v) = s
        .call(reqwest::Method::GET, SECRET, Some(LATER), None)
        .await;
    assert_eq!((code, v["error"].as_str()), (401, Some("invalid token")));
    assert!(challenge.is_some_and(|c| c.contains("invalid_token")));
    // A digest is not a token: the file's content is no credential.
    let digest = format!("sha256:{}", hex::encode(token_digest(READER)));
    assert_eq!(s.get(SECRET, Some(&digest)).await.0, 401);
    let (code, _, _) = s
        .call(reqwest::Method::POST, "/api/v1/snapshot", None, None)
        .await;
    assert_eq!(code, 401);
    assert!(s.admin.calls().is_empty());
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get("/readyz", None).await.0, 200);
}

#[tokio::test]
async fn a_reader_reads_everything_but_secret_data_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(Auth::none().with_tokens(tokens_file(&dir, &both_roles()))).await;
    let (code, v) = s.get(SECRET, Some(READER)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["object"]["data"],
        json!({"tls.crt": REDACTED, "tls.key": REDACTED})
    );
    assert_eq!(v["object"]["type"], "kubernetes.io/tls");
    let (code, v) = s.get("/api/v1/resources?kind=Secret", Some(READER)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["items"][0]["object"]["data"]["tls.key"], REDACTED, "{v}");
    let (_, all) = s.get("/api/v1/resources", Some(READER)).await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(5));
    assert!(!all.to_string().contains(KEY_B64), "no key in the list");
    let (code, v) = s.get("/api/v1/members", Some(READER)).await;
    assert_eq!((code, &v["voters"]), (200, &json!([1])));

    for (code, v) in s.admin_calls(Some(READER)).await {
        assert_eq!(code, 403, "{v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("needs the admin role; ci has the reader role"),
            "{e}"
        );
    }
    assert!(s.admin.calls().is_empty(), "{:?}", s.admin.calls());
}

#[tokio::test]
async fn an_admin_sees_secret_data_and_administers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(Auth::none().with_tokens(tokens_file(&dir, &both_roles()))).await;
    let (code, v) = s.get(SECRET, Some(ADMIN)).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["object"]["data"],
        json!({"tls.crt": CRT_B64, "tls.key": KEY_B64})
    );
    let (_, v) = s.get("/api/v1/resources?kind=Secret", Some(ADMIN)).await;
    assert_eq!(v["items"][0]["object"]["data"]["tls.key"], KEY_B64);
    for (code, v) in s.admin_calls(Some(ADMIN)).await {
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(
        s.admin.calls(),
        [
            "add_learner 4 127.0.0.1:7004",
            "promote 4",
            "remove 4",
            "snapshot true"
        ]
    );
}

#[tokio::test]
async fn without_credentials_configured_callers_read_redacted_and_administer_nothing() {
    let s = Server::start(Auth::none()).await;
    let (code, v) = s.get(SECRET, None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["object"]["data"]["tls.key"], REDACTED);
    for (code, v) in s.admin_calls(None).await {
        assert_eq!(code, 403, "{v}");
        assert_eq!(
            v["error"],
            "admin operations need credentials: start the store with --api-tokens"
        );
    }
    assert!(s.admin.calls().is_empty());
    // A token sent to a server that takes none is an error, not a silent anonymous read.
    let (code, v) = s.get(SECRET, Some(ADMIN)).await;
    assert_eq!(code, 401, "{v}");
    assert!(v["error"]
        .as_str()
        .is_some_and(|e| e.contains("--api-tokens")));
}

#[tokio::test]
async fn client_certificate_identities_carry_their_role() {
    use flotilla_net::{ConnInfo, Identity, Role as NetRole};
    let with_peer = |role, name: &str| {
        let info = ConnInfo {
            remote: "127.0.0.1:1".parse().expect("addr"),
            peer: Some(Identity::new(role, name).expect("identity")),
        };
        // What a TLS accept loop does: the verified identity rides on every request.
        move |r: Router| r.layer(Extension(info))
    };
    let auth = Auth::none().with_client_certs();
    let admin = Server::start_with(auth.clone(), with_peer(NetRole::Admin, "ops")).await;
    let (code, v) = admin.get(SECRET, None).await;
    assert_eq!(
        (code, &v["object"]["data"]["tls.key"]),
        (200, &json!(KEY_B64))
    );
    assert!(admin.admin_calls(None).await.iter().all(|(c, _)| *c == 200));

    let reader = Server::start_with(auth.clone(), with_peer(NetRole::Reader, "ci")).await;
    let (code, v) = reader.get(SECRET, None).await;
    assert_eq!(
        (code, &v["object"]["data"]["tls.key"]),
        (200, &json!(REDACTED))
    );
    assert!(reader
        .admin_calls(None)
        .await
        .iter()
        .all(|(c, _)| *c == 403));

    let store = Server::start_with(auth.clone(), with_peer(NetRole::Store, "1")).await;
    let (code, v) = store.get(SECRET, None).await;
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]
        .as_str()
        .is_some_and(|e| e.contains("spiffe://flotilla/store/1 has no API rights")));

    // Client-certificate auth on, no certificate: 401.
    let none = Server::start(auth).await;
    assert_eq!(none.get(SECRET, None).await.0, 401);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(Auth::none().with_tokens(tokens_file(&dir, &both_roles()))).await;
    let pad = "x".repeat(MAX_BODY);
    let big = serde_json::to_vec(&json!({"id": 4, "addr": pad})).expect("json");
    let (code, _, v) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/members/learners",
            Some(ADMIN),
            Some(big.clone()),
        )
        .await;
    assert_eq!(code, 413, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("65536")),
        "{v}"
    );
    // Just under the limit is read (and refused for what it says, not its size).
    let fits =
        serde_json::to_vec(&json!({"id": 4, "addr": "x".repeat(MAX_BODY - 100)})).expect("json");
    assert!(fits.len() <= MAX_BODY);
    let (code, _, v) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/members/learners",
            Some(ADMIN),
            Some(fits),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // Nobody without the role gets the body read at all.
    let (code, _, _) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/members/learners",
            Some(READER),
            Some(big),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(s.admin.calls().len(), 1);
}

/// Polls `f` every 100 ms for up to 10 s (five reload intervals).
async fn within_reload<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + RELOAD_INTERVAL * 5;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {:?}", RELOAD_INTERVAL * 5);
}

#[tokio::test]
async fn the_tokens_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = tokens_file(&dir, &both_roles());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(file.clone().watch(RELOAD_INTERVAL, stop));
    let s = Server::start(Auth::none().with_tokens(file.clone())).await;
    assert_eq!(s.get(SECRET, Some(LATER)).await.0, 401);

    let added = format!("{}admin later {LATER}\n", both_roles());
    std::fs::write(file.path(), &added).expect("write");
    within_reload("an added token works", || async {
        s.get(SECRET, Some(LATER)).await.0 == 200
    })
    .await;

    // (A bad version keeping the tokens before it: `auth::tests`.)
    std::fs::write(file.path(), both_roles()).expect("write");
    within_reload("a removed token stops working", || async {
        s.get(SECRET, Some(LATER)).await.0 == 401
    })
    .await;
    assert_eq!(s.get(SECRET, Some(ADMIN)).await.0, 200);
    assert_eq!(s.get(SECRET, Some(READER)).await.0, 200);
}

#[test]
fn a_malformed_tokens_file_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens");
    std::fs::write(
        &path,
        format!("# ok\nadmin alice {ADMIN}\nsuperuser bob {READER}\nreader carol tooshort\n"),
    )
    .expect("write");
    let e = TokenFile::load(&path).expect_err("malformed").to_string();
    let p = path.display();
    assert!(
        e.contains(&format!("{p}:3: unknown role \"superuser\"")),
        "{e}"
    );
    assert!(
        e.contains(&format!("{p}:4: the token of \"carol\" has 8 characters")),
        "{e}"
    );
    let e = TokenFile::load(dir.path().join("missing"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("reading the API tokens file"), "{e}");
}
