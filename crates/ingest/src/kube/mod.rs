//! The Kubernetes source: kube-rs watchers on every kind the translator reads, turned into
//! events and published through the same [`crate::emit`] path as the file source.
//!
//! - [`KubeSourceConfig`] / [`client`]: how the agent reaches its API server (a kubeconfig
//!   file and context, the default kubeconfig, or in-cluster config in a pod), and the Lease
//!   settings that status write-back uses.
//! - `source`: discovery, one `kube::runtime::watcher` per served kind (with the watcher's
//!   default backoff), a watch on CustomResourceDefinitions that starts a kind's watcher
//!   when its CRD appears and stops it (deleting its objects) when the CRD goes.
//! - `index`: the synchronous core that decides what to publish: per-kind resync through
//!   origins, Secret filtering, stripping of churning fields (read its module doc).
//!
//! - [`status`] / [`lease`]: status write-back, run beside the source with the same client by
//!   the agent replica holding the cluster's Lease.

mod index;
pub mod lease;
mod source;
pub mod status;
#[cfg(test)]
mod tests;

pub use source::KubeSource;

use crate::{Error, Result};
use std::path::PathBuf;

/// How to reach the API server of the watched cluster.
#[derive(Clone, Debug, Default)]
pub struct KubeSourceConfig {
    /// A kubeconfig file; `None`: in-cluster config when `KUBERNETES_SERVICE_HOST` is set
    /// (a pod), else the default kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
}

/// A kube-rs client built as [`KubeSourceConfig`] says.
pub async fn client(cfg: &KubeSourceConfig) -> Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: cfg.context.clone(),
        ..Default::default()
    };
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))?
        }
        None if cfg.context.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            kube::Config::incluster()
                .map_err(|e| Error::KubeConfig(format!("in-cluster config: {e}")))?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::KubeConfig(format!("default kubeconfig: {e}")))?,
    };
    Ok(kube::Client::try_from(config)?)
}
