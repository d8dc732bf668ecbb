//! The Tongbao hub.
//!
//! Modules are split by trust boundary and never import upward: `tls`
//! turns connections into identities, `service` is the only gRPC layer,
//! `policy`, `registry` and `appender` hold the rules, `store` knows only
//! bytes on disk.
#![forbid(unsafe_code)]

/// The hub runs on jemalloc, in every process that links it (`tongbao-hub`,
/// the test hub, the bench): under load glibc's malloc took ~20 % of the
/// hub's CPU, and mimalloc doubled its peak RSS (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod access_log;
pub mod admin_audit;
pub mod admission;
pub mod appender;
pub mod backdating;
pub mod backup;
pub mod certificate_cache;
pub mod channel_log;
pub mod cli;
pub mod config;
pub mod example_parties;
pub mod failpoint;
pub mod fatal;
pub mod follow;
pub mod freshness;
pub mod full_check;
pub mod health;
pub mod heavy;
pub mod hub;
pub mod inboxes;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod replica;
pub mod roles;
pub mod service;
pub mod store;
pub mod tls;
pub mod verifier;
pub mod workflow;

pub use config::HubConfig;
pub use hub::{Hub, HubError};
