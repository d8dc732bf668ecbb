//! The handlers of the HTTP/JSON API, one file per concern.

pub mod audit;
pub mod inbox;
pub mod meetings;
pub mod messages;
pub mod pending;
pub mod scan;
pub mod workflow;
