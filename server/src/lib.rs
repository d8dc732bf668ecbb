//! The Tongbao hub.
//!
//! Modules are split by trust boundary and never import upward: `tls`
//! turns connections into identities, `service` is the only gRPC layer,
//! `policy`, `registry` and `appender` hold the rules, `store` knows only
//! bytes on disk.
#![forbid(unsafe_code)]

pub mod admin_audit;
pub mod appender;
pub mod cli;
pub mod config;
pub mod domain;
pub mod failpoint;
pub mod hub;
pub mod inboxes;
pub mod log;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod service;
pub mod store;
pub mod tls;
pub mod verifier;
pub mod workflow;

pub use config::HubConfig;
pub use hub::{Hub, HubError};
