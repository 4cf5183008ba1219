//! The Flotilla fleet harness.
//!
//! - [`proxy`]: simulated proxies speaking delta and SotW ADS as Envoy does, one gRPC
//!   connection each; [`decode`] decodes each distinct resource version once for all of them.
//! - [`recorder`]: per proxy and resource every version received, when, with the store
//!   revision; per change, when each affected proxy ACKed it ([`intern`] keeps it small).
//! - [`harness`]: starts and owns the processes ([`procs`]): nats-server, stores, edges, agents,
//!   standalone, real Envoys ([`envoy`]); writes or publishes the world ([`fixtures`]).
//! - [`run`]: a load run (warm-up, churn at a rate, settle, report); [`chaos`]: the chaos mode
//!   with faults ([`faults`], [`inject`]) and its checks ([`fold`]: the expected state digest).
//! - [`report`] + [`stats`]: table, JSON, SVG; [`scenario`]: the scenario file and presets.

pub mod api;
pub mod chaos;
pub mod cli;
pub mod decode;
pub mod envoy;
pub mod faults;
pub mod fixtures;
pub mod fold;
pub mod harness;
pub mod inject;
pub mod intern;
pub mod procs;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod ui;
