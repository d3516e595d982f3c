//! The store's typed errors.

use uuid::Uuid;

use crate::clock::{BadTimestamp, DriftError};

/// What went wrong in the store. Every case says what was wrong and with which input; none
/// leaves a partial write behind (each write runs in one transaction).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource is not in the registry.
    #[error("unknown resource `{0}`")]
    UnknownResource(String),
    /// The field is not a column of the resource.
    #[error("unknown field `{field}` of resource `{resource}`")]
    UnknownField {
        /// Resource.
        resource: String,
        /// Field.
        field: String,
    },
    /// A value does not match its column's type.
    #[error("field `{field}` of `{resource}` must be {expected}")]
    WrongType {
        /// Resource.
        resource: String,
        /// Field.
        field: String,
        /// The column type's name.
        expected: &'static str,
    },
    /// A shared call on an owned resource, or the other way round.
    #[error("`{resource}` is {actual}, not {expected}")]
    WrongKind {
        /// Resource.
        resource: String,
        /// What the call needs ("shared" or "owned").
        expected: &'static str,
        /// What it is.
        actual: &'static str,
    },
    /// The row does not exist or was deleted.
    #[error("no live row {uuid} in `{resource}`")]
    NotFound {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
    },
    /// A create with the UUID of a live row.
    #[error("row {uuid} already exists in `{resource}`")]
    AlreadyExists {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
    },
    /// A change to an owned row by a client that does not own it.
    #[error("row {uuid} of `{resource}` is owned by {owner}, not by {author}")]
    NotOwner {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Its owner.
        owner: Uuid,
        /// Who tried.
        author: Uuid,
    },
    /// A request that cannot be carried out as asked (empty update, bad page size, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A row larger than [`crate::value::MAX_ROW_BYTES`].
    #[error(
        "a row of `{resource}` would take {size} bytes, above the limit of {limit} bytes per row (MAX_ROW_BYTES): store large data in files and keep a reference in the row"
    )]
    TooLarge {
        /// Resource.
        resource: String,
        /// The row's size by [`crate::Value::wire_size`].
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// One entry of a batch failed; nothing of the batch was written.
    #[error("entry {index} of the batch: {source}")]
    BatchEntry {
        /// Zero-based index of the entry.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Box<StoreError>,
    },
    /// A remote timestamp too far ahead.
    #[error(transparent)]
    Drift(#[from] DriftError),
    /// A wire message that does not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The database holds something this version cannot read.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The schema does not match the registry.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// SQLite failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the error is the caller's fault (bad input) rather than the store's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            StoreError::Corrupt(_)
                | StoreError::Schema(_)
                | StoreError::Migrate(_)
                | StoreError::Db(_)
        )
    }
}

impl From<BadTimestamp> for StoreError {
    fn from(e: BadTimestamp) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
