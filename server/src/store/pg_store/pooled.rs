//! A pooled connection that never goes back to the pool once its call was
//! abandoned.
//!
//! A call cut short by the store's bound (`CALL_WAIT`, in `block_on`) may
//! leave its request in flight on its connection. deadpool puts a dropped
//! connection back in the pool, and its fast recycling only checks that
//! the socket is open: the next call drawing it would queue behind the
//! unanswered request (and meet the bound too), or find a transaction
//! still open. So `block_on` drops an abandoned call's future inside
//! [`abandon`], and every [`Pooled`] dropped meanwhile is detached from
//! the pool instead; the driver closes it once its request in flight is
//! answered (until then the session, and the locks its transaction took,
//! last at the database; its transaction is then rolled back). A call
//! that ran to its end, failed or not,
//! leaves no request in flight: its connection is pooled again.

use super::db;
use crate::store::StoreError;
use deadpool_postgres::{Object, Pool};
use std::cell::Cell;

thread_local! {
    /// Set on this thread while an abandoned call's future is dropped.
    static ABANDONING: Cell<bool> = const { Cell::new(false) };
}

/// A connection drawn from the pool for one call (see the module doc).
pub struct Pooled(Option<Object>);

/// Draws a connection from `pool`.
pub async fn pooled(pool: &Pool) -> Result<Pooled, StoreError> {
    Ok(Pooled(Some(pool.get().await.map_err(db)?)))
}

impl Pooled {
    /// The connection, as the store's statement helpers take it.
    pub fn client(&self) -> Result<&Object, StoreError> {
        self.0.as_ref().ok_or_else(gone)
    }

    /// The connection, to begin a transaction on.
    pub fn client_mut(&mut self) -> Result<&mut Object, StoreError> {
        self.0.as_mut().ok_or_else(gone)
    }
}

/// Never met: only the drop takes the connection out.
fn gone() -> StoreError {
    StoreError::Database("the call's connection is closed".into())
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let abandoned = ABANDONING.with(Cell::get);
        if let (Some(c), true) = (self.0.take(), abandoned) {
            drop(Object::take(c));
        }
    }
}

/// Drops `call`, a call's future cut short with its request perhaps in
/// flight: the connections it holds leave the pool.
pub fn abandon<F>(call: F) {
    /// Clears the flag even if a drop panics.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ABANDONING.with(|a| a.set(false));
        }
    }
    ABANDONING.with(|a| a.set(true));
    let _reset = Reset;
    drop(call);
}
