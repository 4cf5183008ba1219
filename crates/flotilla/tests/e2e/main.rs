//! End-to-end tests with the real parts: nats-server, three `flotilla store` processes
//! (openraft over real sockets, logs on disk), `flotilla edge`, `flotilla ingest` watching a
//! directory, and the real Envoy routing real HTTP to local backends.

mod api_auth;
mod bad_input;
mod btp;
mod ctp;
mod hardening;
mod ingest;
mod kube;
mod membership;
mod multicluster;
mod poison;
mod ratelimit;
mod ratelimit_policy;
mod sds;
mod spine;
mod standalone;
mod support;
mod tls_dynamic;
