//! The one error type of the ingest crate: publishing, cluster-name validation and the file
//! source's IO. `is_transient` is what the retry loops look at.

use std::path::PathBuf;

/// A boxed error from a publisher implementation (NATS, the embedded bus, a test double).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster name cannot be one NATS subject token (see [`crate::validate_cluster`]).
    #[error(
        "invalid cluster name {name:?}: {reason} (a cluster name must be one NATS subject \
         token of 1 to {max} bytes without '.', '*', '>', '/', whitespace or control characters)",
        max = crate::MAX_CLUSTER_LEN
    )]
    InvalidCluster { name: String, reason: &'static str },

    /// The event is not self-consistent (a key of another cluster).
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    #[error("encoding event as JSON: {0}")]
    Encode(#[from] serde_json::Error),

    /// Publishing failed. `transient` says whether retrying the same event (with the same
    /// dedup id) may succeed: a timeout, a lost connection or a missing stream may heal; a
    /// payload over the server's limit never will.
    #[error("publishing to {subject} failed: {source}")]
    Publish {
        subject: String,
        transient: bool,
        #[source]
        source: BoxError,
    },

    /// The NATS server refused to let this client publish on `subject` (a permissions
    /// violation: the user's permissions do not include it). Neither transient nor to be
    /// skipped: nothing this agent publishes can get through until the configuration changes.
    #[error(
        "the NATS server refused publishing to {subject}: {message} (this agent's NATS user may \
         not publish for this cluster: check --cluster against the agent's NATS credentials)"
    )]
    Denied { subject: String, message: String },

    #[error("creating or checking stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: BoxError,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("watching {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },

    /// The Kubernetes client could not be configured (kubeconfig, context, in-cluster).
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(String),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The blocking task that reads and parses files died (a panic in parsing).
    #[error("file loader task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// Builds a [`Error::Publish`]; for other [`crate::Publisher`] implementations.
    pub fn publish(
        subject: impl Into<String>,
        transient: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Publish {
            subject: subject.into(),
            transient,
            source: source.into(),
        }
    }

    /// Whether nothing more can be published (the server refuses this publisher): a source
    /// stops with this error rather than dropping or retrying events.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Denied { .. })
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Publish {
                transient: true,
                ..
            }
        )
    }
}
