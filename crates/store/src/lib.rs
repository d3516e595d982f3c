//! murmur's store: the CRDT model of a library over SQLite.
//!
//! It knows nothing of the network. The node feeds it local writes (from the API) and
//! remote changes (from peers), and asks it what to send.
//!
//! # Layout
//!
//! Dependencies run one way, from the facade down:
//!
//! - types and pure rules, no SQL:
//!   [`error`]; [`value`]: column values across JSON, CBOR and SQLite; [`registry`]: the
//!   synced resources (shared or owned) and their columns, which drive everything else, so
//!   a new resource needs a migration and one registration; [`clock`]: the HLC (uhlc, with
//!   the client UUID as id), drift checks, an injectable physical clock; [`op`]:
//!   operations, version vectors, sync pages, snapshot rows; `rowclock`: the byte layout
//!   of a shared row's register timestamps; [`merge`]: the merge rules as pure functions;
//!   [`hash`]: the blake3 hash type; [`digest`]: row hashes and range fingerprints; [`validate`]: checks of network input; [`members`]: the library's devices as signed events and their fold; [`wire`]: bounded CBOR decoding; [`commit`]:
//!   what the commit feed carries.
//! - `sql`: statements built from the registry and the tables below the engine: rows and
//!   their registers, the op log in chunks, the derived `files`, the stored version
//!   vector, the client pool, the schema checks.
//! - `engine`: applies an ordered list of changes inside a transaction: shared rows,
//!   their in-place path, owned rows, snapshot import; one entry point whose `Mode` says
//!   whose changes they are.
//! - `writer`: the one writer. The write lock, `BEGIN IMMEDIATE`, the commit, the
//!   version vector and horizon after the commit, and the commit feed are written there
//!   once, and every write goes through it.
//! - `local` (this node's writes) and `remote` (what peers send: batches, snapshot pages,
//!   and pruning), each a transaction of the writer around the engine; `fold` (the
//!   digest's upkeep) and `repair` (rows a peer sent where the digests differ).
//! - [`store`]: the [`Store`] facade, whose state is private to it; `read` (API reads,
//!   the client pool) and `export` (what a peer is sent: ops it lacks, snapshot pages,
//!   the digest) and `ranges` (the digest and its key ranges) are reads through its
//!   public accessors.
//! - `statements` (hidden): the engine's own SQL, for the bench's plain-SQL baselines.
#![deny(missing_docs)]

pub mod clock;
pub mod commit;
pub mod digest;
mod engine;
pub mod error;
mod export;
mod fold;
pub mod hash;
mod local;
pub mod members;
pub mod merge;
pub mod op;
pub mod page;
pub mod proof;
mod ranges;
mod read;
pub mod registry;
mod remote;
mod repair;
mod rowclock;
mod sql;
#[doc(hidden)]
pub mod statements;
pub mod store;
pub mod validate;
pub mod value;
pub mod wire;
mod writer;

pub use clock::{Clock, DriftError, Hlc, ManualClock, PhysicalClock};
pub use commit::{Commit, Origin};
pub use error::StoreError;
pub use export::{MAX_PAGE, MAX_PAGE_BYTES};
pub use fold::FOLD_LEAVES;
pub use local::{BatchEntry, WriteOutcome};
pub use op::{
    ApplyReport, AuthorVersion, Change, Method, Op, OpId, OwnedRow, RejectReason, Rejection,
    RowEvent, SnapshotImport, SnapshotRow, VersionVector,
};
pub use page::{
    AuthorRange, OpsCursor, OpsPage, SnapshotPosition, SnapshotProgress, resumed_proofs,
};
pub use ranges::{Digest, MAX_ROWS_ASKED};
pub use read::MAX_READ;
pub use registry::{ColumnDef, Kind, Registry, ResourceDef, SchemaRelation, SchemaVersion};
pub use repair::RepairReport;
pub use sql::clients::ClientInfo;
pub use sql::digest::WRITER_COLLATION;
pub use store::{COMMIT_FEED_CAP, Durability, Store, StoreOptions};
pub use value::{ColumnType, MAX_ROW_BYTES, Value};
pub use writer::{CHECKPOINT_BUSY_MS, CHECKPOINT_RETRY, WAL_CHECKPOINT_BYTES, WalStats};
