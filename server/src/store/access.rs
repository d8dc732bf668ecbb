//! The access log's storage boundary: what a store that keeps the access
//! log offers it.
//!
//! A replicated store keeps the access log beside everything else, so
//! that a replica's record of the calls it served outlives its host and
//! an auditor collects every replica's log from any of them. The store
//! knows bytes and indexes only: a record is its number, its hub time and
//! its stored line; the tree is its stored hashes by stored-hash index;
//! the checkpoint is a signed note. The access log (`access_log`) numbers,
//! hashes, signs and checks them.
//!
//! Each origin (the hub's own access log, or one replica's) is a log of
//! its own, written by one process at a time: the writer holds the
//! origin's [`OriginGuard`] for its life.
//!
//! Reads are a trait of their own ([`AccessLogRead`]) so that a reader
//! beside a running writer (`audit-log verify`, `export`) takes them from
//! one snapshot ([`AccessLogStore::access_snapshot`]): a checkpoint, an
//! extent, records and hashes that belong together, whatever the writer
//! appends or retention removes meanwhile.

use super::StoreError;
use tongbao_proto::Hash;

/// One record as stored: its number in its log, its hub time (µs), and
/// its line (the bytes its leaf hash is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    pub n: u64,
    pub at_micros: i64,
    pub line: Vec<u8>,
}

/// How much of one origin's log is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessExtent {
    /// The first record kept (records before it were removed under
    /// retention; their hashes stay), None when no record is stored.
    pub first_kept: Option<u64>,
    /// The number after the last stored record (0 when none is).
    pub next: u64,
    /// Stored hashes: `stored_hash_count(next)` in a whole log.
    pub hashes: u64,
}

/// One origin claimed for writing; let go when dropped or released.
pub trait OriginGuard: Send {
    /// Lets go of the origin now (a process that stops and starts again
    /// in place, as a standby that became the leader, claims it anew).
    fn release(self: Box<Self>);
}

/// The access log's reads (see the module doc).
pub trait AccessLogRead {
    /// The latest signed checkpoint of `origin`, if any.
    fn access_checkpoint(&self, origin: &str) -> Result<Option<String>, StoreError>;
    fn access_extent(&self, origin: &str) -> Result<AccessExtent, StoreError>;
    /// Up to `limit` records from number `from` on, in order (a record
    /// missing from the middle is simply not there: readers check).
    fn access_records(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AccessRow>, StoreError>;
    /// Stored hashes by index, in the order asked; a missing one fails.
    fn access_hashes(&self, origin: &str, indexes: &[u64]) -> Result<Vec<Hash>, StoreError>;
    /// Up to `limit` stored hashes from index `from` on, in order, as
    /// (index, hash).
    fn access_hash_range(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash)>, StoreError>;
    /// The first record numbered `from..before` whose hub time is at
    /// least `at_micros`, if any (retention finds where a day's records
    /// end; the bound keeps each look to a chunk of them).
    fn access_first_at(
        &self,
        origin: &str,
        from: u64,
        before: u64,
        at_micros: i64,
    ) -> Result<Option<u64>, StoreError>;
    /// Every origin that was ever claimed, in order.
    fn access_origins(&self) -> Result<Vec<String>, StoreError>;
}

/// The access log's storage in a store (see the module doc).
pub trait AccessLogStore: AccessLogRead + Send + Sync {
    /// This store's reads (each from the store as it is when it runs).
    fn access_reads(&self) -> &dyn AccessLogRead;
    /// Reads that all see one snapshot of the store, taken at the first
    /// of them, for as long as the reader is held: what commits meanwhile
    /// (appends, removals) is not seen. Hold it no longer than needed (a
    /// database keeps what the snapshot may still read).
    fn access_snapshot(&self) -> Result<Box<dyn AccessLogRead + '_>, StoreError>;
    /// Claims `origin` for this process's writer, refused (naming it)
    /// while another process holds it, and lists the origin.
    fn access_claim(&self, origin: &str) -> Result<Box<dyn OriginGuard>, StoreError>;
    /// Appends records (consecutive, from the log's next number) and the
    /// stored hashes they add (from index `first_hash` on), with a signed
    /// checkpoint over them when given, and removes the records before
    /// `remove_before` when given (retention: their hashes stay, and the
    /// removal record naming them is among `rows`): all of it durably,
    /// as one commit. Fails unless this store still holds the origin's
    /// claim (a claim whose hold the store lost, as a database session
    /// that ended, fails it too): a writer never writes unclaimed.
    fn access_append(
        &self,
        origin: &str,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
        checkpoint: Option<&str>,
        remove_before: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Whether the log lies in the hub's own data directory (sled's
    /// files): then a copy of its checkpoint there guards nothing more.
    fn in_data_dir(&self) -> bool {
        false
    }
    /// Whether [`Self::access_append_lazily`] leaves records to sync
    /// later, and a checkpoint costs syncs of its own (sled's files): the
    /// writer then answers a round's waiters before it signs, and syncs
    /// records nobody waits on lazily. A store whose every commit is one
    /// transaction (PostgreSQL) answers false.
    fn access_syncs_lazily(&self) -> bool {
        false
    }
    /// Appends as [`Self::access_append`] without checkpoint or removal,
    /// records no caller waits on: they need be durable only once a later
    /// `access_append` (rows or none) returns, which makes them so.
    fn access_append_lazily(
        &self,
        origin: &str,
        rows: &[AccessRow],
        first_hash: u64,
        hashes: &[Hash],
    ) -> Result<(), StoreError> {
        self.access_append(origin, rows, first_hash, hashes, None, None)
    }
}
