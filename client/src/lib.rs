//! Client library for departmental systems exchanging through a Tongbao hub.
//!
//! A [`Client`] connects with mutual TLS, signs messages locally with the
//! unit's Ed25519 key, and verifies every entry it receives (sender
//! signature under the registered key, leaf hash) before handing it over.
//! [`Client::subscribe`] reconnects and resumes from the last cursor on its
//! own, so a caller sees every entry of its inbox exactly once. A hub that
//! runs as several replicas is listed as `hubs = [...]` in `client.toml`:
//! the client moves to the next replica that answers when the one in use
//! cannot be reached, and passes over one that serves an older history.
//!
//! ```
//! use futures::StreamExt;
//! use tongbao_client::{Client, ClientConfig, Draft};
//! use tongbao_proto::pb::Kind;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A throwaway PKI and hub on a free port, as `tongbao-hub pki init` and
//! # // `tongbao-hub serve` would make them.
//! # let dir = tempfile::tempdir()?;
//! # let opts = tongbao_server::pki::InitOptions {
//! #     listen: "127.0.0.1:0".parse()?, data_dir: dir.path().join("data"), days: 1, force: false };
//! # tongbao_server::pki::init(dir.path(), &opts)?;
//! # let hub = tongbao_server::Hub::start(&tongbao_server::HubConfig::load(&dir.path().join("hub.toml"))?).await?;
//! # let hub_url = format!("https://{}", hub.addr());
//! # let units = dir.path().join("units");
//! // Each department has a client.toml: hub address, CA, certificate, keys.
//! let tax = Client::connect(&ClientConfig::load(&units.join("tax/client.toml"))?.with_hub(&hub_url)).await?;
//!
//! // Tell Civil Affairs and Public Security, signed by the Tax Bureau.
//! let draft = Draft::new(Kind::Notification, "Irregular donations", "Org X, 2026-11")
//!     .to_units(["civil-affairs", "public-security"]);
//! let receipt = tax.push(draft).await?; // answered once durable
//! assert_eq!((receipt.channel.as_str(), receipt.seq), ("tax", 0));
//!
//! // Civil Affairs reads its inbox live, verified, resuming after reconnects.
//! let civil = Client::connect(&ClientConfig::load(&units.join("civil-affairs/client.toml"))?.with_hub(&hub_url)).await?;
//! let mut inbox = Box::pin(civil.subscribe(0));
//! let entry = inbox.next().await.ok_or("inbox closed")??;
//! assert_eq!(entry.message().subject, "Irregular donations");
//! assert_eq!(entry.message().sender, "tax");
//! # drop(inbox);
//! # hub.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod bundle;
mod client;
mod config;
mod draft;
mod error;
pub mod hub_cert;
mod lifecycle;
pub mod party_keys;
mod probe;
mod push_queue;
mod tasks;
pub mod trust;
mod verified_bytes;
mod verify;
mod warnings;
mod workflow;

pub use client::{AckOutcome, Client, Page, ProcessError, PushReceipt, VerifiedCheckpoint};
pub use config::ClientConfig;
pub use draft::Draft;
pub use error::{ClientError, HubFailure, KeyRefusal};
pub use tongbao_proto as proto;
pub use tongbao_proto::format_micros;
pub use verify::{KeyRing, VerifiedEntry, answers_pin, verify_entry};
pub use warnings::NewWarning;
