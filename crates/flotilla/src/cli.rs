//! Command-line interface. Every flag has a default and an environment variable.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "flotilla",
    version,
    about = "Multi-cluster control plane for Envoy fleets"
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_LOG_JSON",
        default_value_t = false
    )]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch a directory of Kubernetes YAML and publish its resources to NATS JetStream.
    Ingest(IngestArgs),
    /// Run one node of the Raft-replicated store.
    Store(StoreArgs),
    /// Serve xDS (delta and state-of-the-world ADS) to Envoy proxies from the store's watch.
    Edge(EdgeArgs),
    /// File ingest, a one-node store, an edge and the API in one process.
    Standalone(StandaloneArgs),
    /// Print an Envoy bootstrap for a proxy of one gateway.
    Bootstrap(BootstrapArgs),
    /// Translate a YAML file offline and print statuses or xDS resources.
    Translate(TranslateArgs),
    /// Administer a running store cluster through its REST API (membership, snapshots).
    Ctl(CtlArgs),
    /// Make a local CA and the certificates (and proxy token key) of a dev or test setup.
    Certs(CertsArgs),
    /// Serve Envoy's rate limit service (global rate limits) from a rules file.
    Ratelimit(RatelimitArgs),
    /// Print a fresh API bearer token and its line for the --api-tokens file.
    Token(crate::api_auth::TokenArgs),
    /// Write a nats-server configuration (JetStream; one user per cluster agent and one for the
    /// stores, each with only the permissions it needs) and the users' password files.
    NatsConfig(NatsConfigArgs),
}

#[derive(Args, Debug)]
pub struct RatelimitArgs {
    /// Where Envoys call `envoy.service.ratelimit.v3.RateLimitService`.
    #[arg(long, env = "FLOTILLA_RATELIMIT", default_value = "127.0.0.1:18090")]
    pub listen: std::net::SocketAddr,
    /// The rules (YAML: `domains: [{domain, rules: [{descriptor, limit}]}]`); reread when it
    /// changes (a bad version is logged and the rules in force stay).
    #[arg(long, env = "FLOTILLA_RATELIMIT_CONFIG")]
    pub config: PathBuf,
    /// Count in this Redis (HOST:PORT), shared by every instance, instead of in memory.
    #[arg(long, env = "FLOTILLA_RATELIMIT_REDIS")]
    pub redis: Option<String>,
    /// When the counter fails (Redis down, memory full): `open` lets requests through,
    /// `closed` limits them.
    #[arg(long, value_enum, default_value = "open")]
    pub on_failure: OnFailure,
    /// Counters held in memory at most (in-memory counting); at the bound, expired counters
    /// are dropped, then the least recently used.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_keys: usize,
    #[command(flatten)]
    pub net: ListenArgs,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Where to write them (created 0700; an existing CA there is reused).
    #[arg(long, default_value = "./flotilla-certs")]
    pub out: PathBuf,
    /// Store node ids, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub stores: Vec<String>,
    /// Edge names.
    #[arg(long, value_delimiter = ',')]
    pub edges: Vec<String>,
    /// Clusters, one ingest agent each.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Proxies' gateways, CLUSTER/NAMESPACE/NAME.
    #[arg(long, value_delimiter = ',')]
    pub proxies: Vec<String>,
    /// API clients with the admin role.
    #[arg(long, value_delimiter = ',')]
    pub admins: Vec<String>,
    /// API clients with the read-only role.
    #[arg(long, value_delimiter = ',')]
    pub readers: Vec<String>,
    /// NATS servers: a server certificate each (`flotilla nats-config --tls-cert`).
    #[arg(long, value_delimiter = ',')]
    pub nats: Vec<String>,
    /// DNS names and IP addresses the servers (stores, edges) are reached at.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Lifetime of the leaf certificates, in days.
    #[arg(long, default_value_t = flotilla_net::certs::DEFAULT_LEAF_DAYS)]
    pub days: u32,
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// REST API addresses (HOST:PORT) of the store nodes, comma separated: changes are sent to
    /// whichever is the leader.
    #[arg(
        long,
        env = "FLOTILLA_API",
        default_value = "127.0.0.1:8081",
        value_delimiter = ','
    )]
    pub api: Vec<String>,
    /// A file holding the API token to send as `Authorization: Bearer` (its first line that is
    /// not blank or a `#` comment). Membership changes and snapshots need an admin token.
    #[arg(long, env = "FLOTILLA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA bundle to trust for the API's certificate: talk HTTPS. With --tls-cert and
    /// --tls-key, present a client certificate (an admin/… or reader/… identity).
    #[arg(long, env = "FLOTILLA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Show voters, learners, their addresses and the leader.
    Members,
    /// Add a node as a learner: it receives the log (or a snapshot) but does not vote yet.
    AddLearner {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Its Raft gRPC address HOST:PORT.
        #[arg(long)]
        addr: String,
    },
    /// Make a learner that has caught up a voter.
    Promote {
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner from the cluster (e.g. a node whose disk died).
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Build a snapshot on the leader now; with --purge, drop the log it covers.
    Snapshot {
        #[arg(long, default_value_t = false)]
        purge: bool,
    },
    /// Print the computed status conditions of objects, one line per condition (in file mode
    /// this, and the API, is where statuses are seen).
    Status {
        /// Only this cluster's objects.
        #[arg(long)]
        cluster: Option<String>,
        /// Only this kind (e.g. HTTPRoute; case-insensitive).
        #[arg(long)]
        kind: Option<String>,
        /// Only objects of this name.
        name: Option<String>,
    },
}

/// How a part's listeners are exposed and limited.
#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Allow listening on a non-loopback address without TLS: every peer that can reach the
    /// port is then trusted (logged as a warning at start).
    #[arg(long, env = "FLOTILLA_INSECURE", default_value_t = false)]
    pub insecure: bool,
    /// Kernel accept queue length of every listener (capped by net.core.somaxconn).
    #[arg(long, env = "FLOTILLA_BACKLOG", default_value_t = flotilla_net::listen::DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Connections the main peer-facing listener (xDS on an edge, gRPC on a store) holds at
    /// once; default: what the open file limit leaves after the other listeners and files.
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a new connection has for its TLS handshake, or to send its first byte.
    #[arg(
        long = "handshake-timeout",
        env = "FLOTILLA_HANDSHAKE_TIMEOUT",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may read nothing before it is closed (longer than every
    /// keepalive: only dead or silent peers reach it).
    #[arg(
        long = "idle-timeout",
        env = "FLOTILLA_IDLE_TIMEOUT",
        default_value_t = 300
    )]
    pub idle_timeout_secs: u64,
    /// CA bundle this part trusts (mTLS on every port it serves and calls). With
    /// --tls-cert and --tls-key; the three files are reloaded when they change.
    #[arg(long, env = "FLOTILLA_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This part's certificate (its identity: spiffe://flotilla/<role>/<name>).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// This part's private key.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

impl ListenArgs {
    /// The TLS files, when given.
    pub fn tls_files(&self) -> Option<flotilla_net::TlsFiles> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(flotilla_net::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "FLOTILLA_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// NATS user (`flotilla nats-config` makes `agent-<cluster>` for each agent and `store`).
    #[arg(long, env = "FLOTILLA_NATS_USER", requires = "nats_password_file")]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password (`nats-<user>.password`).
    #[arg(long, env = "FLOTILLA_NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// Require TLS to NATS and trust this CA (PEM) for the server's certificate.
    #[arg(long, env = "FLOTILLA_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies its clients.
    #[arg(long, env = "FLOTILLA_NATS_CERT", requires_all = ["nats_key", "nats_ca"])]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FLOTILLA_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
}

impl NatsArgs {
    pub fn client_config(&self) -> flotilla_ingest::NatsClientConfig {
        flotilla_ingest::NatsClientConfig {
            url: self.nats.clone(),
            user: self.nats_user.clone(),
            password_file: self.nats_password_file.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct NatsConfigArgs {
    /// Output directory: nats.conf, nats-<user>.password files, JetStream's store directory.
    #[arg(
        long,
        env = "FLOTILLA_NATS_CONFIG_OUT",
        default_value = "./flotilla-nats"
    )]
    pub out: PathBuf,
    /// The clusters whose agents get a user, comma separated.
    #[arg(
        long,
        env = "FLOTILLA_CLUSTERS",
        value_delimiter = ',',
        required = true
    )]
    pub clusters: Vec<String>,
    /// The server's client address.
    #[arg(long, env = "FLOTILLA_NATS_LISTEN", default_value = "0.0.0.0:4222")]
    pub listen: String,
    /// Server certificate (PEM): clients must use TLS.
    #[arg(long, env = "FLOTILLA_NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, env = "FLOTILLA_NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates the server requires (on top of user and password).
    #[arg(long, env = "FLOTILLA_NATS_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Name of the cluster this agent speaks for (a NATS subject token: no '.', '*', '>').
    #[arg(long, env = "FLOTILLA_CLUSTER", default_value = "local")]
    pub cluster: String,
    /// Directory of YAML files (watched recursively).
    #[arg(
        long,
        env = "FLOTILLA_DIR",
        default_value = ".",
        conflicts_with = "kubernetes"
    )]
    pub dir: PathBuf,
    /// Watch a Kubernetes API server instead of a directory (see the `--kubeconfig` group).
    #[arg(long, env = "FLOTILLA_KUBERNETES", default_value_t = false)]
    pub kubernetes: bool,
    #[command(flatten)]
    pub kube: KubeIngestArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// How `ingest --kubernetes` reaches its cluster, and the Lease of status write-back.
#[derive(Args, Debug)]
pub struct KubeIngestArgs {
    /// Kubeconfig file. Without it: in-cluster config in a pod (KUBERNETES_SERVICE_HOST
    /// set), else the default kubeconfig ($KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "FLOTILLA_KUBECONFIG", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, env = "FLOTILLA_KUBE_CONTEXT", requires = "kubernetes")]
    pub context: Option<String>,
    /// Namespace of the Lease that elects the agent replica writing status back (used by
    /// status write-back only).
    #[arg(long, env = "FLOTILLA_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of that Lease (used by status write-back only).
    #[arg(long, env = "FLOTILLA_LEASE_NAME", default_value = "flotilla-ingest")]
    pub lease_name: String,
}

impl KubeIngestArgs {
    pub fn source_config(&self) -> flotilla_ingest::KubeSourceConfig {
        flotilla_ingest::KubeSourceConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// The Lease of status write-back, held as this replica (`$POD_NAME`, else hostname
    /// and pid).
    pub fn lease(&self) -> flotilla_ingest::kube::lease::LeaseSettings {
        flotilla_ingest::kube::lease::LeaseSettings {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            identity: flotilla_ingest::kube::lease::default_identity(),
        }
    }
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// This node's Raft id (unique, > 0).
    #[arg(long, env = "FLOTILLA_NODE_ID", default_value_t = 1)]
    pub id: u64,
    /// Where the Raft log and snapshots live.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = "./flotilla-data")]
    pub data_dir: PathBuf,
    /// gRPC address (Raft transport and the watch API for edges).
    #[arg(long, env = "FLOTILLA_GRPC", default_value = "127.0.0.1:7001")]
    pub grpc: SocketAddr,
    /// REST API address.
    #[arg(long, env = "FLOTILLA_API", default_value = "127.0.0.1:8081")]
    pub api: SocketAddr,
    /// Every member of the cluster as ID=HOST:PORT (gRPC), comma separated, this node included.
    #[arg(
        long,
        env = "FLOTILLA_PEERS",
        default_value = "1=127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,
    /// The rate limit service instances (`flotilla ratelimit`) Envoys call for the global rate
    /// limits of BackendTrafficPolicy: HOST:PORT, comma separated. Without it a global rate
    /// limit is refused (a status condition on the policy). Every store node must be given the
    /// same list. The services' rules: GET /api/v1/ratelimit, or `flotilla translate --to
    /// ratelimit`.
    #[arg(long, env = "FLOTILLA_RATELIMIT_SERVICE", value_delimiter = ',')]
    pub ratelimit_service: Vec<String>,
    /// CA bundle (PEM) of the rate limit services' certificates (`flotilla ratelimit
    /// --tls-*`): Envoys then call them over TLS, accepting only a certificate this CA issued
    /// for the host they call. Its contents are sent to the Envoys: give every store node the
    /// same file.
    #[arg(
        long,
        env = "FLOTILLA_RATELIMIT_SERVICE_CA",
        requires = "ratelimit_service"
    )]
    pub ratelimit_service_ca: Option<PathBuf>,
    /// Envoys refuse requests (500) under a global rate limit when the rate limit service
    /// cannot answer, instead of letting them through.
    #[arg(long, env = "FLOTILLA_RATELIMIT_FAIL_CLOSED", default_value_t = false)]
    pub ratelimit_fail_closed: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub api_auth: crate::api_auth::ApiAuthArgs,
}

#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// Store watch endpoints (gRPC HOST:PORT), comma separated; the edge fails over between them.
    #[arg(
        long,
        env = "FLOTILLA_STORES",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub stores: Vec<String>,
    /// Where Envoy proxies connect for ADS.
    #[arg(long, env = "FLOTILLA_XDS", default_value = "127.0.0.1:18000")]
    pub xds: SocketAddr,
    /// Admin HTTP address: /healthz, /stats (JSON), /metrics (Prometheus).
    #[arg(long, env = "FLOTILLA_ADMIN", default_value = "127.0.0.1:19000")]
    pub admin: SocketAddr,
    /// Name of this edge in logs and on the store.
    #[arg(long, env = "FLOTILLA_EDGE_ID", default_value = "edge")]
    pub id: String,
    /// Key of the per-gateway proxy tokens (`flotilla bootstrap --token-key` makes them):
    /// proxies must then present their gateway's token (or a client certificate).
    #[arg(long, env = "FLOTILLA_PROXY_TOKEN_KEY")]
    pub proxy_token_key: Option<PathBuf>,
    #[command(flatten)]
    pub listen: ListenArgs,
}

#[derive(Args, Debug)]
pub struct StandaloneArgs {
    /// Directory of YAML files (watched recursively).
    #[arg(
        long,
        short = 'f',
        env = "FLOTILLA_DIR",
        default_value = "./examples/standalone"
    )]
    pub dir: PathBuf,
    /// Cluster name given to the files' resources.
    #[arg(long, env = "FLOTILLA_CLUSTER", default_value = "local")]
    pub cluster: String,
    /// Where Envoy proxies connect for ADS.
    #[arg(long, env = "FLOTILLA_XDS", default_value = "127.0.0.1:18000")]
    pub xds: SocketAddr,
    /// REST API address.
    #[arg(long, env = "FLOTILLA_API", default_value = "127.0.0.1:8081")]
    pub api: SocketAddr,
    /// Admin HTTP address of the edge: /healthz, /stats (JSON), /metrics (Prometheus).
    #[arg(long, env = "FLOTILLA_ADMIN", default_value = "127.0.0.1:19000")]
    pub admin: SocketAddr,
    /// Internal gRPC address of the one-node store (watch API); port 0 picks a free one.
    #[arg(long, env = "FLOTILLA_GRPC", default_value = "127.0.0.1:0")]
    pub grpc: SocketAddr,
    /// Where the one-node store keeps its log; default: a fresh temporary directory.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key of the per-gateway proxy tokens (`flotilla bootstrap --token-key` makes them):
    /// proxies must then present their gateway's token (or a client certificate).
    #[arg(long, env = "FLOTILLA_PROXY_TOKEN_KEY")]
    pub proxy_token_key: Option<PathBuf>,
    /// Where the embedded rate limit service listens (plaintext: keep it on loopback or a
    /// private network), with the rules of every global rate limit, replaced in place on every
    /// change. Envoys are told this address in their xDS (127.0.0.1 for an unspecified IP);
    /// port 0 (the default) picks a free one.
    #[arg(long, env = "FLOTILLA_RATELIMIT", default_value = "127.0.0.1:0")]
    pub ratelimit: SocketAddr,
    /// Rate limit service instances (`flotilla ratelimit`) Envoys call instead of the embedded
    /// one, which is then not started: HOST:PORT, comma separated. Their rules: GET
    /// /api/v1/ratelimit, or `flotilla translate --to ratelimit`.
    #[arg(long, env = "FLOTILLA_RATELIMIT_SERVICE", value_delimiter = ',')]
    pub ratelimit_service: Vec<String>,
    /// CA bundle (PEM) of those services' certificates (`flotilla ratelimit --tls-*`): Envoys
    /// then call them over TLS, accepting only a certificate this CA issued for the host they
    /// call.
    #[arg(
        long,
        env = "FLOTILLA_RATELIMIT_SERVICE_CA",
        requires = "ratelimit_service"
    )]
    pub ratelimit_service_ca: Option<PathBuf>,
    /// Count the embedded service's limits in this Redis (HOST:PORT, shared with other
    /// instances) instead of in memory.
    #[arg(long, env = "FLOTILLA_RATELIMIT_REDIS")]
    pub ratelimit_redis: Option<String>,
    /// Envoys refuse requests (500) under a global rate limit when the rate limit service
    /// cannot answer, instead of letting them through.
    #[arg(long, env = "FLOTILLA_RATELIMIT_FAIL_CLOSED", default_value_t = false)]
    pub ratelimit_fail_closed: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub api_auth: crate::api_auth::ApiAuthArgs,
}

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// The gateway this proxy serves: CLUSTER/NAMESPACE/NAME.
    #[arg(long, env = "FLOTILLA_GATEWAY")]
    pub gateway: String,
    /// Edge address(es) HOST:PORT, comma separated.
    #[arg(
        long,
        env = "FLOTILLA_XDS",
        default_value = "127.0.0.1:18000",
        value_delimiter = ','
    )]
    pub xds: Vec<String>,
    /// Envoy admin port (bound on 127.0.0.1).
    #[arg(long, env = "FLOTILLA_ADMIN_PORT", default_value_t = 19901)]
    pub admin_port: u16,
    /// Envoy node id; default: the gateway id.
    #[arg(long, env = "FLOTILLA_NODE_ID")]
    pub node_id: Option<String>,
    /// The edges' proxy token key: the bootstrap then carries this gateway's token.
    #[arg(long, env = "FLOTILLA_PROXY_TOKEN_KEY")]
    pub token_key: Option<PathBuf>,
    /// CA bundle the proxy trusts for the edges' certificates (TLS to the edges). With
    /// --tls-cert and --tls-key, the proxy also presents its certificate.
    #[arg(long, env = "FLOTILLA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The proxy's certificate (spiffe://flotilla/proxy/CLUSTER/NAMESPACE/NAME).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The proxy's private key.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Multi-document YAML input.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    pub output: crate::translate_cmd::Format,
    #[arg(long, value_enum, default_value = "status")]
    pub to: crate::translate_cmd::Output,
    /// Cluster name given to the resources.
    #[arg(long, default_value = "local")]
    pub cluster: String,
    /// Translator feature switches, a JSON object with Envoy Gateway's names, e.g.
    /// `{"backend": false, "runningOnHost": true}` (unknown names are ignored).
    #[arg(long)]
    pub flags: Option<PathBuf>,
}

/// What the rate limit service answers when its counter store fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    Open,
    Closed,
}
