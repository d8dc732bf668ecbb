//! Client library for departmental systems exchanging through a Tongbao hub.
//!
//! A [`Client`] connects with mutual TLS, signs messages locally with the
//! unit's Ed25519 key, and verifies every entry it receives (sender
//! signature under the registered key, leaf hash) before handing it over.
//! [`Client::subscribe`] reconnects and resumes from the last cursor on its
//! own, so a caller sees every entry of its inbox exactly once.
//!
//! ```no_run
//! use tongbao_client::{Client, ClientConfig, Draft};
//! use tongbao_proto::pb::Kind;
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), tongbao_client::ClientError> {
//! let config = ClientConfig::load("certs-example/units/tax/client.toml".as_ref())?;
//! let client = Client::connect(&config).await?;
//!
//! // Tell Civil Affairs and Public Security, signed by the Tax Bureau.
//! let draft = Draft::new(Kind::Notification, "Irregular donations", "Details…")
//!     .to_units(["civil-affairs", "public-security"]);
//! let receipt = client.push(draft).await?;
//! println!("appended as {}:{}", receipt.channel, receipt.seq);
//!
//! // Read the inbox live, verified, resuming after reconnects.
//! let mut inbox = client.subscribe(0);
//! while let Some(entry) = inbox.next().await {
//!     let entry = entry?;
//!     println!("{} from {}: {}", entry.cursor, entry.channel(), entry.message().subject);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod client;
mod config;
mod draft;
mod error;
mod probe;
mod verify;

pub use client::{Client, Page, PushReceipt};
pub use config::ClientConfig;
pub use draft::Draft;
pub use error::ClientError;
pub use tongbao_proto as proto;
pub use verify::{KeyRing, VerifiedEntry, verify_entry};
