//! murmur's store: the CRDT model of a library over SQLite.
//!
//! It knows nothing of the network. The node feeds it local writes (from the API) and
//! remote changes (from peers), and asks it what to send.
//!
//! # Layout
//!
//! - [`registry`]: the synced resources (shared or owned) and their columns; it drives
//!   everything else, so a new resource needs a migration and one registration.
//! - [`value`]: column values across JSON, CBOR and SQLite.
//! - [`clock`]: the HLC (uhlc, with the client UUID as id), drift checks, an injectable
//!   physical clock.
//! - [`op`]: operations, version vectors, sync pages, snapshot rows.
//! - [`merge`]: the merge rules as pure functions.
//! - `engine`: loads registers, merges, stores what moved (multi-row statements).
//! - `oplog`: the op log, in chunks of consecutive ops of one author.
//! - [`store`]: opening, local writes, remote apply (one write lock, one transaction).
//! - `sync`: ops a peer lacks, snapshots, pruning, the digest.
//! - `clients`: the client pool; `read`: API reads; `derived`: the `files` table.
//! - [`validate`]: checks of network input; [`wire`]: bounded CBOR decoding.
#![deny(missing_docs)]

mod clients;
pub mod clock;
mod derived;
mod engine;
pub mod error;
pub mod merge;
pub mod op;
mod oplog;
mod read;
pub mod registry;
mod rowclock;
mod sql;
pub mod store;
mod sync;
pub mod validate;
pub mod value;
pub mod wire;

pub use clients::ClientInfo;
pub use clock::{Clock, DriftError, Hlc, ManualClock, PhysicalClock};
pub use error::StoreError;
pub use op::{
    ApplyReport, AuthorVersion, Change, Method, Op, OpId, OpsCursor, OpsPage, OwnedRow,
    RejectReason, RowEvent, SnapshotRow, VersionVector,
};
pub use read::MAX_READ;
pub use registry::{ColumnDef, Kind, Registry, ResourceDef};
pub use store::{BatchEntry, Durability, Store, StoreOptions, WriteOutcome};
pub use sync::{Digest, MAX_PAGE, SnapshotPosition};
pub use value::{ColumnType, Value};
