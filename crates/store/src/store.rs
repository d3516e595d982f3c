//! The [`Store`]: opening the database, local writes and remote apply.
//!
//! One lock serialises every write: a local write takes its timestamp and sequence number,
//! writes its rows and its op, and commits, all under that lock and in one transaction, so
//! commit order equals timestamp order and a returned write is durable. Reads use the pool
//! directly (WAL lets them run beside the writer).
//!
//! ## Cancellation safety
//! Every write runs in a task of its own: dropping the future of a write does not cancel
//! it half-way, so the in-memory version vector always matches what was committed.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::clock::{Clock, PhysicalClock};
use crate::engine::{self, parse_uuid};
use crate::error::StoreError;
use crate::op::{ApplyReport, Change, Method, Op, OpId, OwnedRow, RowEvent, VersionVector};
use crate::oplog;
use crate::registry::{Kind, Registry, ResourceDef};
use crate::sql::{in_list, query, rows_per_statement};
use crate::validate::validate_change;
use crate::value::{ColumnType, Value};

/// How hard SQLite works to keep a commit across a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives a power loss (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, not of the machine.
    Normal,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The SQLite file; created with its directory's permissions if missing.
    pub path: PathBuf,
    /// This client's UUID (the author of its ops and the id of its clock).
    pub client: Uuid,
    /// Remote timestamps further ahead than this are refused for now (default 100 ms).
    pub max_drift: Duration,
    /// The physical clock (tests inject one).
    pub clock: PhysicalClock,
    /// The synced resources.
    pub registry: Registry,
    /// fsync policy.
    pub durability: Durability,
}

impl StoreOptions {
    /// Options for the default library at `path`, for `client`.
    pub fn new(path: impl Into<PathBuf>, client: Uuid) -> Self {
        StoreOptions {
            path: path.into(),
            client,
            max_drift: Duration::from_millis(100),
            clock: PhysicalClock::System,
            registry: Registry::default_library(),
            durability: Durability::Full,
        }
    }
}

/// What a local write did.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// The rows created (or named), in order.
    pub uuids: Vec<Uuid>,
    /// The ops committed, to publish.
    pub ops: Vec<Op>,
    /// The row-level changes, for subscribers.
    pub events: Vec<RowEvent>,
    /// The rows of an `OwnedBatchCreate` (its header is `ops[0]`); empty for other writes.
    pub owned_rows: Vec<OwnedRow>,
}

impl WriteOutcome {
    /// The write as a peer applies it: the ops, with an owned batch's rows under its header.
    pub fn into_changes(self) -> Vec<Change> {
        let mut ops = self.ops;
        match ops.first() {
            Some(op) if op.method == Method::OwnedBatchCreate && ops.len() == 1 => {
                vec![Change::OwnedRows {
                    header: ops.remove(0),
                    rows: self.owned_rows,
                    last: true,
                }]
            }
            _ => ops.into_iter().map(Change::Op).collect(),
        }
    }
}

/// One entry of an atomic batch of shared writes.
#[derive(Debug, Clone)]
pub enum BatchEntry {
    /// Create a row.
    Create {
        /// Resource.
        resource: String,
        /// Its UUID, or a new one.
        uuid: Option<Uuid>,
        /// Fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Update fields of a row.
    Update {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
        /// Fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Delete a row.
    Delete {
        /// Resource.
        resource: String,
        /// Row.
        uuid: Uuid,
    },
}

pub(crate) struct Inner {
    pub(crate) pool: SqlitePool,
    pub(crate) registry: Registry,
    /// The shared tables whose in-place updates skip the live-row check.
    unborn: engine::Unborn,
    pub(crate) clock: Clock,
    pub(crate) client: Uuid,
    /// Serialises writes (see the module docs).
    pub(crate) write: Mutex<()>,
    /// What this replica has applied; changed only under `write`, after a commit.
    pub(crate) vv: RwLock<VersionVector>,
    /// Per author, the highest seq pruned from the log.
    pub(crate) horizon: RwLock<BTreeMap<Uuid, u64>>,
}

/// A library: the synced tables, their merge state, the op log and the client pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("client", &self.inner.client)
            .finish()
    }
}

/// Tag for the UUIDv5 of rows whose UUID derives from their fields.
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6d75726d_7572_4000_8000_726f77696473);

impl Store {
    /// Opens (or creates) the store at `options.path`, runs the migrations, checks the
    /// registry against the schema and loads the version vector.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        if options.client.is_nil() {
            return Err(StoreError::Invalid(
                "the client UUID must not be nil".into(),
            ));
        }
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::Db)?
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Statement journals and savepoints in memory, not in a temporary file: every
            // page a multi-row statement or a savepoint changes is copied there first
            // (measured: 6-9 % of a batch of remote updates; BENCHMARKS.md).
            .pragma("temp_store", "memory")
            .row_buffer_size(1024);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file cannot drop a connection: skip the ping before each use, one
            // round trip to the connection's worker thread per transaction or read.
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("../../migrations").run(&pool).await?;
        check_schema(&pool, &options.registry).await?;
        // Registers left in the side tables by a version before the row clock.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = engine::move_live_registers(&mut tx, &options.registry).await?;
        let unborn = engine::ensure_unborn_indexes(&mut tx, &options.registry).await?;
        tracing::debug!(
            tables = unborn.len(),
            "shared tables whose in-place updates skip the live-row check"
        );
        let logged = oplog::move_legacy_rows(&mut tx).await?;
        tx.commit().await?;
        if logged > 0 {
            tracing::info!(ops = logged, "moved the op log into chunks");
        }
        if moved > 0 {
            tracing::info!(
                rows = moved,
                "moved live rows' registers into their row clocks"
            );
        }

        let mut vv = VersionVector::default();
        let mut horizon = BTreeMap::new();
        for r in sqlx::query("SELECT client_uuid, contiguous, pruned_through FROM version_vector")
            .fetch_all(&pool)
            .await?
        {
            let author = parse_uuid(&r.try_get::<String, _>(0)?)?;
            vv.authors.entry(author).or_default().contiguous = r.try_get::<i64, _>(1)? as u64;
            let pruned = r.try_get::<i64, _>(2)? as u64;
            if pruned > 0 {
                horizon.insert(author, pruned);
            }
        }
        for (author, seq) in oplog::above_contiguous(&mut *pool.acquire().await?).await? {
            vv.add(OpId { author, seq });
        }
        let clock = Clock::new(options.client, options.max_drift, options.clock.clone());
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                registry: options.registry,
                unborn,
                clock,
                client: options.client,
                write: Mutex::new(()),
                vv: RwLock::new(vv),
                horizon: RwLock::new(horizon),
            }),
        };
        store.touch_client(options.client, None).await?;
        Ok(store)
    }

    /// This client's UUID.
    pub fn client(&self) -> Uuid {
        self.inner.client
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The pool, for read-only queries of the application's own.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Runs `f` in a task of its own (see "Cancellation safety").
    async fn detached<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::spawn(f(store))
            .await
            .map_err(|e| StoreError::Invalid(format!("write task failed: {e}")))?
    }

    // -----------------------------------------------------------------------------------
    // Local writes

    /// Creates a shared row. `uuid` is taken when given (or derived, for resources with
    /// `uuid_from`), else a new UUIDv7.
    pub async fn create_shared(
        &self,
        resource: &str,
        uuid: Option<Uuid>,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<WriteOutcome, StoreError> {
        self.batch(vec![BatchEntry::Create {
            resource: resource.to_owned(),
            uuid,
            fields,
        }])
        .await
        .map_err(unwrap_single)
    }

    /// Updates one or more properties of a live shared row: one SharedUpdate per field.
    pub async fn update_shared(
        &self,
        resource: &str,
        uuid: Uuid,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<WriteOutcome, StoreError> {
        self.batch(vec![BatchEntry::Update {
            resource: resource.to_owned(),
            uuid,
            fields,
        }])
        .await
        .map_err(unwrap_single)
    }

    /// Deletes a live shared row.
    pub async fn delete_shared(
        &self,
        resource: &str,
        uuid: Uuid,
    ) -> Result<WriteOutcome, StoreError> {
        self.batch(vec![BatchEntry::Delete {
            resource: resource.to_owned(),
            uuid,
        }])
        .await
        .map_err(unwrap_single)
    }

    /// Applies shared writes atomically: all of them in one transaction, or none (the error
    /// names the first bad entry).
    pub async fn batch(&self, entries: Vec<BatchEntry>) -> Result<WriteOutcome, StoreError> {
        self.detached(move |s| async move { s.batch_inner(entries).await })
            .await
    }

    async fn batch_inner(&self, entries: Vec<BatchEntry>) -> Result<WriteOutcome, StoreError> {
        let inner = &self.inner;
        // Check what needs no database first, so bad input never takes the lock.
        let mut prepared = Vec::with_capacity(entries.len());
        for (index, e) in entries.into_iter().enumerate() {
            prepared.push(
                self.prepare_entry(e)
                    .map_err(|source| StoreError::BatchEntry {
                        index,
                        source: Box::new(source),
                    })?,
            );
        }
        let _guard = inner.write.lock().await;
        let mut tx = inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = WriteOutcome::default();
        let mut vv = self.read_vv();
        // Creates only, each of another row: insert them without reading a row first.
        // When one row is known here after all, start over on the general path.
        let prepared = match self.try_new_rows(&mut tx, prepared, &mut vv).await? {
            NewRows::Done(out) => {
                self.commit(tx, vv).await?;
                return Ok(out);
            }
            NewRows::NotTried(prepared) => prepared,
            NewRows::Known(prepared) => {
                tx.rollback().await?;
                tx = inner.pool.begin_with("BEGIN IMMEDIATE").await?;
                prepared
            }
        };
        let mut next_seq = vv.contiguous(&inner.client);
        // Whether each named row is alive, read in bulk, then followed through the batch:
        // a local op's timestamp is newer than every one stored, so a create makes its row
        // alive and a delete makes it dead.
        let mut states = load_named_rows(&mut tx, &inner.registry, &prepared).await?;
        // (`states` has an entry for every resource the batch names.)
        let mut alive: std::collections::HashMap<String, std::collections::HashMap<Uuid, bool>> =
            states
                .iter()
                .map(|(res, rows)| {
                    let rows = rows.iter().map(|(u, (row, _))| (*u, row.alive)).collect();
                    (res.clone(), rows)
                })
                .collect();
        // Consecutive entries on one resource go through the engine in one call (the same
        // merge as one call per entry, with the same events in the same order).
        let mut all: Vec<Change> = Vec::with_capacity(prepared.len());
        let mut run_start = 0;
        for (index, p) in prepared.into_iter().enumerate() {
            let at = |source| StoreError::BatchEntry {
                index,
                source: Box::new(source),
            };
            let is_alive = alive
                .get(p.resource.as_str())
                .and_then(|rows| rows.get(&p.uuid))
                .copied()
                .unwrap_or(false);
            let before = all.len();
            match p.method {
                Method::SharedCreate => {
                    if is_alive {
                        return Err(at(StoreError::AlreadyExists {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    next_seq += 1;
                    all.push(Change::Op(self.create_op(
                        next_seq,
                        &p.resource,
                        p.uuid,
                        p.fields,
                    )));
                    if let Some(rows) = alive.get_mut(p.resource.as_str()) {
                        rows.insert(p.uuid, true);
                    }
                }
                Method::SharedUpdate => {
                    if !is_alive {
                        return Err(at(StoreError::NotFound {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    for (prop, value) in p.fields {
                        next_seq += 1;
                        all.push(Change::Op(self.new_op(
                            next_seq,
                            Method::SharedUpdate,
                            &p.resource,
                            Some(p.uuid),
                            Some(prop),
                            Some(value),
                            BTreeMap::new(),
                        )));
                    }
                }
                _ => {
                    if !is_alive {
                        return Err(at(StoreError::NotFound {
                            resource: p.resource,
                            uuid: p.uuid,
                        }));
                    }
                    next_seq += 1;
                    all.push(Change::Op(self.new_op(
                        next_seq,
                        Method::SharedDelete,
                        &p.resource,
                        Some(p.uuid),
                        None,
                        None,
                        BTreeMap::new(),
                    )));
                    if let Some(rows) = alive.get_mut(p.resource.as_str()) {
                        rows.insert(p.uuid, false);
                    }
                }
            }
            // This entry's ops start a new run when the resource changes.
            if before > run_start
                && before < all.len()
                && all[run_start].op().resource != all[before].op().resource
            {
                let res = engine::apply_with(
                    &mut tx,
                    &inner.registry,
                    &all[run_start..before],
                    true,
                    &mut vv,
                    Some(&mut states),
                )
                .await?;
                out.events.extend(res.events);
                run_start = before;
            }
            out.uuids.push(p.uuid);
        }
        if all.len() > run_start {
            let res = engine::apply_with(
                &mut tx,
                &inner.registry,
                &all[run_start..],
                true,
                &mut vv,
                Some(&mut states),
            )
            .await?;
            out.events.extend(res.events);
        }
        out.ops = all
            .into_iter()
            .filter_map(|c| match c {
                Change::Op(op) => Some(op),
                Change::OwnedRows { .. } => None,
            })
            .collect();
        self.commit(tx, vv).await?;
        Ok(out)
    }

    /// The fast path of [`Store::batch`] for a batch of creates of distinct rows: the rows
    /// are inserted where none of them is known here (live, dead, or from updates), with no
    /// read. Not tried for any other batch.
    async fn try_new_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        prepared: Vec<Prepared>,
        vv: &mut VersionVector,
    ) -> Result<NewRows, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(prepared.len());
        let creates_of_distinct_rows = prepared.iter().all(|p| {
            p.method == Method::SharedCreate && seen.insert((p.resource.as_str(), p.uuid))
        });
        if prepared.is_empty() || !creates_of_distinct_rows {
            return Ok(NewRows::NotTried(prepared));
        }
        let mut seq = vv.contiguous(&self.inner.client);
        let changes: Vec<Change> = prepared
            .into_iter()
            .map(|p| {
                seq += 1;
                Change::Op(self.create_op(seq, &p.resource, p.uuid, p.fields))
            })
            .collect();
        match engine::apply_new(tx, &self.inner.registry, &changes, vv).await? {
            Some(res) => {
                let ops: Vec<Op> = changes.into_iter().map(Change::into_op).collect();
                Ok(NewRows::Done(WriteOutcome {
                    uuids: ops.iter().filter_map(|op| op.uuid).collect(),
                    ops,
                    events: res.events,
                    owned_rows: Vec::new(),
                }))
            }
            None => Ok(NewRows::Known(
                changes
                    .into_iter()
                    .map(|c| {
                        let op = c.into_op();
                        Prepared {
                            uuid: op.uuid.unwrap_or_default(),
                            resource: op.resource,
                            fields: op.fields,
                            method: op.method,
                        }
                    })
                    .collect(),
            )),
        }
    }

    fn prepare_entry(&self, e: BatchEntry) -> Result<Prepared, StoreError> {
        let (resource, uuid, fields, method) = match e {
            BatchEntry::Create {
                resource,
                uuid,
                fields,
            } => (resource, uuid, Some(fields), Method::SharedCreate),
            BatchEntry::Update {
                resource,
                uuid,
                fields,
            } => (resource, Some(uuid), Some(fields), Method::SharedUpdate),
            BatchEntry::Delete { resource, uuid } => {
                (resource, Some(uuid), None, Method::SharedDelete)
            }
        };
        let def = self.shared_def(&resource)?;
        let fields = match fields {
            Some(f) => convert_fields(def, &f)?,
            None => BTreeMap::new(),
        };
        if method != Method::SharedDelete && fields.is_empty() {
            return Err(StoreError::Invalid(format!(
                "a create or update needs at least one field of `{resource}`"
            )));
        }
        let uuid = match (uuid, &def.uuid_from) {
            (Some(u), _) => u,
            (None, Some(cols)) => derive_uuid(def, cols, &fields)?,
            (None, None) => Uuid::now_v7(),
        };
        Ok(Prepared {
            resource,
            uuid,
            fields,
            method,
        })
    }

    fn shared_def(&self, resource: &str) -> Result<&ResourceDef, StoreError> {
        let def = self.inner.registry.get(resource)?;
        if def.kind != Kind::Shared {
            return Err(StoreError::WrongKind {
                resource: resource.to_owned(),
                expected: "shared",
                actual: "owned",
            });
        }
        Ok(def)
    }

    fn owned_def(&self, resource: &str) -> Result<&ResourceDef, StoreError> {
        let def = self.inner.registry.get(resource)?;
        if def.kind != Kind::Owned {
            return Err(StoreError::WrongKind {
                resource: resource.to_owned(),
                expected: "owned",
                actual: "shared",
            });
        }
        Ok(def)
    }

    fn create_op(
        &self,
        seq: u64,
        resource: &str,
        uuid: Uuid,
        fields: BTreeMap<String, Value>,
    ) -> Op {
        self.new_op(
            seq,
            Method::SharedCreate,
            resource,
            Some(uuid),
            None,
            None,
            fields,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new_op(
        &self,
        seq: u64,
        method: Method,
        resource: &str,
        uuid: Option<Uuid>,
        property: Option<String>,
        value: Option<Value>,
        fields: BTreeMap<String, Value>,
    ) -> Op {
        let ts = self.inner.clock.now();
        Op {
            author: self.inner.client,
            seq,
            time: ts.time,
            method,
            resource: resource.to_owned(),
            uuid,
            property,
            value,
            fields,
            count: None,
        }
    }

    /// Commits, then records the version vector the engine advanced (and stored in the
    /// transaction) in memory. Call with the write lock held.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        vv: VersionVector,
    ) -> Result<(), StoreError> {
        tx.commit().await?;
        *self.inner.vv.write().unwrap_or_else(|e| e.into_inner()) = vv;
        Ok(())
    }

    /// Writes owned rows (new or this client's own) with ONE `OwnedBatchCreate` op. Each
    /// row is an object of fields with an optional `uuid`.
    pub async fn write_owned(
        &self,
        resource: &str,
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<WriteOutcome, StoreError> {
        let def = self.owned_def(resource)?.clone();
        let mut owned = Vec::with_capacity(rows.len());
        for (index, mut r) in rows.into_iter().enumerate() {
            let at = |source| StoreError::BatchEntry {
                index,
                source: Box::new(source),
            };
            let uuid = match r.remove("uuid") {
                None | Some(serde_json::Value::Null) => Uuid::now_v7(),
                Some(serde_json::Value::String(s)) => Uuid::parse_str(&s).map_err(|_| {
                    at(StoreError::WrongType {
                        resource: def.name.clone(),
                        field: "uuid".into(),
                        expected: "uuid",
                    })
                })?,
                Some(_) => {
                    return Err(at(StoreError::WrongType {
                        resource: def.name.clone(),
                        field: "uuid".into(),
                        expected: "uuid",
                    }));
                }
            };
            let fields = convert_fields(&def, &r).map_err(at)?;
            if fields.is_empty() {
                return Err(at(StoreError::Invalid(format!(
                    "a row needs at least one field of `{}`",
                    def.name
                ))));
            }
            let values = def
                .columns
                .iter()
                .map(|c| fields.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect();
            owned.push(OwnedRow { uuid, values });
        }
        if owned.is_empty() {
            return Err(StoreError::Invalid(
                "an owned batch needs at least one row".into(),
            ));
        }
        self.detached(move |s| async move { s.write_owned_inner(def, owned).await })
            .await
    }

    async fn write_owned_inner(
        &self,
        def: ResourceDef,
        rows: Vec<OwnedRow>,
    ) -> Result<WriteOutcome, StoreError> {
        let inner = &self.inner;
        let _guard = inner.write.lock().await;
        let mut tx = inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        let uuids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
        let mut vv = self.read_vv();
        let mut op = self.new_op(
            vv.contiguous(&inner.client) + 1,
            Method::OwnedBatchCreate,
            &def.name,
            None,
            None,
            None,
            BTreeMap::new(),
        );
        op.count = Some(rows.len() as u64);
        let change = Change::OwnedRows {
            header: op.clone(),
            rows,
            last: true,
        };
        let res = engine::apply(
            &mut tx,
            &inner.registry,
            std::slice::from_ref(&change),
            true,
            &mut vv,
        )
        .await?;
        // Rows that exist must be ours: the engine refused the batch otherwise, and the
        // transaction is dropped (rolled back) with this error.
        if let Some((uuid, owner)) = res.not_owner {
            return Err(StoreError::NotOwner {
                resource: def.name.clone(),
                uuid,
                owner,
                author: inner.client,
            });
        }
        let ops = vec![op];
        self.commit(tx, vv).await?;
        let owned_rows = match change {
            Change::OwnedRows { rows, .. } => rows,
            Change::Op(_) => Vec::new(),
        };
        Ok(WriteOutcome {
            uuids,
            ops,
            events: res.events,
            owned_rows,
        })
    }

    /// Deletes one of this client's owned rows.
    pub async fn delete_owned(
        &self,
        resource: &str,
        uuid: Uuid,
    ) -> Result<WriteOutcome, StoreError> {
        let def = self.owned_def(resource)?.clone();
        self.detached(move |s| async move {
            let inner = &s.inner;
            let _guard = inner.write.lock().await;
            let mut tx = inner.pool.begin_with("BEGIN IMMEDIATE").await?;
            let owners = owned_owners(&mut tx, &def.name, &[uuid]).await?;
            match owners.first() {
                None => {
                    return Err(StoreError::NotFound {
                        resource: def.name.clone(),
                        uuid,
                    });
                }
                Some((_, owner)) if *owner != inner.client => {
                    return Err(StoreError::NotOwner {
                        resource: def.name.clone(),
                        uuid,
                        owner: *owner,
                        author: inner.client,
                    });
                }
                Some(_) => {}
            }
            let mut vv = s.read_vv();
            let op = s.new_op(
                vv.contiguous(&inner.client) + 1,
                Method::OwnedDelete,
                &def.name,
                Some(uuid),
                None,
                None,
                BTreeMap::new(),
            );
            let changes = vec![Change::Op(op.clone())];
            let res = engine::apply(&mut tx, &inner.registry, &changes, true, &mut vv).await?;
            let ops = vec![op];
            s.commit(tx, vv).await?;
            Ok(WriteOutcome {
                uuids: vec![uuid],
                ops,
                events: res.events,
                owned_rows: Vec::new(),
            })
        })
        .await
    }

    // -----------------------------------------------------------------------------------
    // Remote apply

    /// Applies a batch of remote changes in one transaction. Each change is validated
    /// (schema, drift, ownership); duplicates are no-ops; delivery order does not matter.
    /// An `OwnedBatchCreate` that arrives without its rows is returned in `needs_rows`.
    pub async fn apply(&self, batch: Vec<Change>) -> Result<ApplyReport, StoreError> {
        self.detached(move |s| async move { s.apply_inner(batch).await })
            .await
    }

    async fn apply_inner(&self, batch: Vec<Change>) -> Result<ApplyReport, StoreError> {
        let inner = &self.inner;
        let mut report = ApplyReport::default();
        let _guard = inner.write.lock().await;
        let mut vv = self.read_vv();
        // The version vector and the batch's complete ops so far: a second copy of an op
        // is a duplicate. An author's ops mostly come in order, which only moves its
        // contiguous seq.
        let mut seen = vv.clone();
        let mut candidates = Vec::with_capacity(batch.len());
        for change in batch {
            let op = change.op();
            let id = op.id();
            if let Err((reason, why)) = validate_change(&inner.registry, &change) {
                report.rejected.push((id, reason, why));
                continue;
            }
            let complete = matches!(change, Change::Op(_) | Change::OwnedRows { last: true, .. });
            if vv.has(id) || (complete && !first_copy(&mut seen, id)) {
                report.duplicates += 1;
                continue;
            }
            if let Change::Op(op) = &change
                && op.method == Method::OwnedBatchCreate
            {
                report.needs_rows.push(op.clone());
                continue;
            }
            candidates.push(change);
        }
        // The clock takes the batch's latest timestamp first: when it is within the drift
        // bound, so is every other, and the clock is then past all of them (one lock and
        // one read of the system clock, not one per op). Otherwise each is checked.
        let latest = candidates.iter().map(|c| c.op().ts()).max();
        let accepted = if latest.is_none_or(|ts| inner.clock.observe(ts).is_ok()) {
            candidates
        } else {
            let mut accepted = Vec::with_capacity(candidates.len());
            for change in candidates {
                let op = change.op();
                match inner.clock.observe(op.ts()) {
                    Ok(()) => accepted.push(change),
                    Err(e) => report.rejected.push((
                        op.id(),
                        crate::op::RejectReason::Drift,
                        e.to_string(),
                    )),
                }
            }
            accepted
        };
        if accepted.is_empty() {
            return Ok(report);
        }
        let mut tx = inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        let res = engine::apply_remote(&mut tx, &inner.registry, &inner.unborn, &accepted, &mut vv)
            .await?;
        self.commit(tx, vv).await?;
        report.applied = res.logged.len();
        report.rows = res.rows;
        report.events = res.events;
        report.in_place = res.in_place;
        report.rejected.extend(res.rejected);
        Ok(report)
    }

    /// This replica's version vector.
    pub fn version_vector(&self) -> VersionVector {
        self.read_vv()
    }

    pub(crate) fn read_vv(&self) -> VersionVector {
        self.inner
            .vv
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Whether `id` is not in `seen` yet; records it there.
fn first_copy(seen: &mut VersionVector, id: OpId) -> bool {
    if seen.has(id) {
        return false;
    }
    seen.add(id);
    true
}

/// What [`Store::try_new_rows`] did.
enum NewRows {
    /// The batch is written (not yet committed).
    Done(WriteOutcome),
    /// Not a batch of new rows: the entries, untouched.
    NotTried(Vec<Prepared>),
    /// A row is known here: the entries back, and the transaction must be rolled back.
    Known(Vec<Prepared>),
}

struct Prepared {
    resource: String,
    uuid: Uuid,
    fields: BTreeMap<String, Value>,
    method: Method,
}

fn unwrap_single(e: StoreError) -> StoreError {
    match e {
        StoreError::BatchEntry { source, .. } => *source,
        other => other,
    }
}

/// Converts API fields to column values, refusing unknown fields and wrong types.
pub(crate) fn convert_fields(
    def: &ResourceDef,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<BTreeMap<String, Value>, StoreError> {
    let mut out = BTreeMap::new();
    for (name, json) in fields {
        let col = def.column(name)?;
        out.insert(
            name.clone(),
            Value::from_json(&def.name, name, col.ty, json)?,
        );
    }
    Ok(out)
}

fn derive_uuid(
    def: &ResourceDef,
    cols: &[String],
    fields: &BTreeMap<String, Value>,
) -> Result<Uuid, StoreError> {
    let mut key = String::new();
    for c in cols {
        let v = fields.get(c).and_then(Value::as_text).ok_or_else(|| {
            StoreError::Invalid(format!("`{}` needs `{c}` to derive its row UUID", def.name))
        })?;
        key.push_str(v);
        key.push('\u{1f}');
    }
    Ok(Uuid::new_v5(
        &UUID_NAMESPACE,
        format!("{}\u{1e}{key}", def.name).as_bytes(),
    ))
}

/// The registers of every row `entries` name, per resource (rows stored nowhere are absent).
/// Resource names were checked against the registry.
async fn load_named_rows(
    conn: &mut SqliteConnection,
    registry: &Registry,
    entries: &[Prepared],
) -> Result<engine::Preloaded, StoreError> {
    let mut by_resource: BTreeMap<&str, std::collections::BTreeSet<Uuid>> = BTreeMap::new();
    for p in entries {
        by_resource.entry(&p.resource).or_default().insert(p.uuid);
    }
    let mut out = engine::Preloaded::new();
    for (resource, uuids) in by_resource {
        let def = registry.get(resource)?;
        let uuids: Vec<Uuid> = uuids.into_iter().collect();
        out.insert(
            resource.to_owned(),
            engine::load_shared(conn, def, &uuids).await?,
        );
    }
    Ok(out)
}

async fn owned_owners(
    conn: &mut SqliteConnection,
    table: &str,
    uuids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    let mut out = Vec::new();
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT uuid, owner FROM {table} WHERE uuid IN ({})",
            in_list(chunk.len())
        );
        let mut q = query(sql);
        for u in chunk {
            q = q.bind(u.hyphenated().to_string());
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.push((
                parse_uuid(&r.try_get::<String, _>(0)?)?,
                parse_uuid(&r.try_get::<String, _>(1)?)?,
            ));
        }
    }
    Ok(out)
}

pub(crate) async fn persist_vv(
    conn: &mut SqliteConnection,
    vv: &VersionVector,
    authors: impl Iterator<Item = Uuid>,
) -> Result<(), StoreError> {
    let mut last = None;
    for a in authors {
        if last == Some(a) {
            continue;
        }
        last = Some(a);
        sqlx::query(
            "INSERT INTO version_vector (client_uuid, contiguous) VALUES (?, ?) \
             ON CONFLICT (client_uuid) DO UPDATE SET contiguous = excluded.contiguous",
        )
        .bind(a.hyphenated().to_string())
        .bind(vv.contiguous(&a) as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn check_schema(pool: &SqlitePool, registry: &Registry) -> Result<(), StoreError> {
    for def in registry.iter() {
        let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?)")
            .bind(def.name.clone())
            .fetch_all(pool)
            .await?;
        let have: std::collections::HashMap<String, String> = rows
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
            .collect();
        if have.is_empty() {
            return Err(StoreError::Schema(format!(
                "resource `{}` has no table",
                def.name
            )));
        }
        let mut need: Vec<&str> = vec!["uuid"];
        match def.kind {
            Kind::Owned => need.extend(["owner", "crdt_ts", "crdt_seq"]),
            Kind::Shared => need.push("crdt_clock"),
        }
        if let Some(c) = def
            .columns
            .iter()
            .find(|c| c.name.len() > u16::MAX as usize)
        {
            return Err(StoreError::Schema(format!(
                "column name `{}` of `{}` is too long",
                c.name, def.name
            )));
        }
        need.extend(def.columns.iter().map(|c| c.name.as_str()));
        for n in need {
            if !have.contains_key(n) {
                return Err(StoreError::Schema(format!(
                    "table `{}` has no column `{n}`",
                    def.name
                )));
            }
        }
        // The data columns hold the registers' values: SQLite must store them as written.
        for c in &def.columns {
            let declared = have.get(&c.name).map(String::as_str).unwrap_or_default();
            if !keeps_values(declared, c.ty) {
                return Err(StoreError::Schema(format!(
                    "column `{}` of `{}` is declared `{declared}`, whose affinity would convert \
                     {} values; declare it {}",
                    c.name,
                    def.name,
                    c.ty.name(),
                    match c.ty {
                        ColumnType::Text | ColumnType::Uuid => "TEXT (or BLOB)",
                        ColumnType::Integer | ColumnType::Bool => "INTEGER (or BLOB)",
                        ColumnType::Real => "REAL (or BLOB)",
                    }
                )));
            }
        }
    }
    Ok(())
}

/// Whether a column declared `declared` stores values of type `ty` exactly as written, by
/// SQLite's affinity rules (<https://sqlite.org/datatype3.html#determination_of_column_affinity>).
/// A text value in an INTEGER column, or 1.0 in a NUMERIC one, would come back converted.
fn keeps_values(declared: &str, ty: ColumnType) -> bool {
    let d = declared.to_ascii_uppercase();
    #[derive(PartialEq)]
    enum Affinity {
        Integer,
        Text,
        Blob,
        Real,
        Numeric,
    }
    let affinity = if d.contains("INT") {
        Affinity::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Affinity::Text
    } else if d.contains("BLOB") || d.is_empty() {
        Affinity::Blob
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    };
    match ty {
        ColumnType::Text | ColumnType::Uuid => {
            matches!(affinity, Affinity::Text | Affinity::Blob)
        }
        ColumnType::Integer | ColumnType::Bool => {
            matches!(
                affinity,
                Affinity::Integer | Affinity::Numeric | Affinity::Blob
            )
        }
        ColumnType::Real => matches!(affinity, Affinity::Real | Affinity::Blob),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_affinities_that_keep_values_pass() {
        use ColumnType::*;
        for (declared, ty, ok) in [
            ("TEXT", Text, true),
            ("varchar(20)", Uuid, true),
            ("", Text, true),
            ("BLOB", Real, true),
            ("INTEGER", Integer, true),
            ("BOOLEAN", Bool, true),
            ("INTEGER", Text, false),
            ("NUMERIC", Real, false),
            ("DECIMAL", Text, false),
            ("REAL", Integer, false),
            ("DOUBLE", Real, true),
            ("TEXT", Real, false),
        ] {
            assert_eq!(keeps_values(declared, ty), ok, "{declared} for {ty:?}");
        }
    }

    #[test]
    fn a_batch_counts_every_second_copy_of_an_op_in_any_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let id = |author, seq| OpId { author, seq };
        let mut seen = VersionVector::default();
        let order = [
            (a, 5, true),
            (a, 6, true),
            (b, 1, true),
            (a, 7, true),
            (a, 6, false),
            (a, 9, true),
            (a, 8, true),
            (a, 9, false),
            (a, 3, true),
            (a, 3, false),
            (b, 1, false),
            (a, 10, true),
            (a, 5, false),
        ];
        for (author, seq, new) in order {
            assert_eq!(
                first_copy(&mut seen, id(author, seq)),
                new,
                "{author} {seq}"
            );
        }
    }
}
