//! The handlers of the HTTP/JSON API, one file per concern.

pub mod audit;
pub mod inbox;
pub mod messages;
pub mod workflow;
