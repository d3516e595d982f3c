//! The [`Store`] facade: opening the database, and every write, handed to the module that
//! does it (`local`, `remote`, the client pool's SQL) with the one [`Writer`]. The store's
//! state is private to this module; the read modules (`read`, `export`) use its public
//! accessors only.
//!
//! Every write goes through the writer: a local write takes its timestamp and sequence
//! number, writes its rows and its op, and commits, all under the write lock and in one
//! transaction, so commit order equals timestamp order and a returned write is durable.
//! Every commit then leaves on the commit feed ([`Store::commits`]). Reads use the pool
//! directly (WAL lets them run beside the writer).
//!
//! ## Cancellation safety
//! Every write runs in a task of its own: dropping the future of a write does not cancel
//! it half-way, so the in-memory version vector always matches what was committed.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::ed25519;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::clock::{Clock, PhysicalClock};
use crate::commit::{Commit, Origin};
use crate::engine;
use crate::error::StoreError;
use crate::local::{BatchEntry, Local, WriteOutcome, unwrap_single};
use crate::members::{
    DEVICES_LOG, EVENT_COLUMN, Event, MembersState, Membership, SignedEvent, devices_log_def,
};
use crate::op::{ApplyReport, Change, SnapshotImport, SnapshotRow, VersionVector};
use crate::page::{SnapshotPosition, SnapshotProgress};
use crate::proof::{Hash, Proof, Signer};
use crate::registry::Registry;
use crate::remote::Remote;
use crate::sql::{clients, digest, members, oplog, schema, versions};
use crate::writer::{Replica, WalStats, Writer};

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
    /// The device's key (`identity.key`; not the node's transport key): it signs this
    /// store's ops, and the client UUID of the pool is its [`crate::proof::device_uuid`].
    /// Each open writes under a new author (an incarnation of the device, see
    /// [`crate::proof`]).
    pub device: ed25519::Keypair,
    /// Remote timestamps further ahead than this are refused for now (default 100 ms).
    pub max_drift: Duration,
    /// The physical clock (tests inject one).
    pub clock: PhysicalClock,
    /// The synced resources.
    pub registry: Registry,
    /// fsync policy.
    pub durability: Durability,
    /// The WAL size past which the writer checkpoints and truncates it (default
    /// [`crate::WAL_CHECKPOINT_BYTES`]; also SQLite's `journal_size_limit`).
    pub wal_limit: u64,
}

impl StoreOptions {
    /// Options for the default library at `path`, for the device `device`.
    pub fn new(path: impl Into<PathBuf>, device: ed25519::Keypair) -> Self {
        StoreOptions {
            path: path.into(),
            device,
            max_drift: Duration::from_millis(100),
            clock: PhysicalClock::System,
            registry: Registry::default_library(),
            durability: Durability::Full,
            wal_limit: crate::writer::WAL_CHECKPOINT_BYTES,
        }
    }
}

/// Commits not yet taken by the commit feed's consumer, at most; more make writers wait.
pub const COMMIT_FEED_CAP: usize = 1024;

struct Inner {
    pool: SqlitePool,
    registry: Registry,
    /// The shared tables whose in-place updates skip the live-row check.
    unborn: engine::Unborn,
    clock: Clock,
    /// The device (the client UUID of the pool).
    client: Uuid,
    /// This incarnation's signer; its author writes this store's ops.
    signer: Signer,
    /// Every write goes through it; it holds the version vector and the log horizon.
    writer: Writer,
    /// The membership's events, root and fold ([`crate::members`]), as last read.
    members: std::sync::RwLock<Arc<MembersState>>,
    /// The fold, for those who watch it change.
    members_tx: watch::Sender<Arc<Membership>>,
    /// Devices whose owned rows this run has forgotten already.
    forgotten: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

/// The `meta` key of the membership's trust root (the founder's device key).
const MEMBER_ROOT: &str = "member_root";

/// A library: the synced tables, their merge state, the op log and the client pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("client", &self.inner.client)
            .field("author", &self.inner.signer.author())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `options.path`, runs the migrations, checks the
    /// registry against the schema and loads the version vector.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let signer = Signer::new_incarnation(options.device.clone());
        let client = signer.device();
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::Db)?
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_millis(crate::writer::BUSY_TIMEOUT_MS))
            // A WAL that SQLite restarts is truncated to this (see `writer`'s bound).
            .pragma("journal_size_limit", options.wal_limit.to_string())
            .foreign_keys(true)
            // Statement journals and savepoints in memory, not in a temporary file: every
            // page a multi-row statement or a savepoint changes is copied there first
            // (BENCHMARKS.md has what that costs).
            .pragma("temp_store", "memory")
            // Named by the synced tables' triggers: without it (another program), a write
            // to them fails (see `sql::digest`).
            .collation(digest::WRITER_COLLATION, |a: &str, b: &str| a.cmp(b))
            .row_buffer_size(1024);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file cannot drop a connection: skip the ping before each use, one
            // round trip to the connection's worker thread per transaction or read.
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("../../migrations").run(&pool).await?;
        // Every library has the membership's events, whatever the application registers.
        let mut options = options;
        if options.registry.get(DEVICES_LOG).is_err() {
            options.registry.register(devices_log_def());
        }
        schema::check_schema(&pool, &options.registry).await?;
        // Registers left in the side tables by a version before the row clock.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = engine::move_live_registers(&mut tx, &options.registry).await?;
        let unborn = engine::ensure_unborn_indexes(&mut tx, &options.registry).await?;
        tracing::debug!(
            tables = unborn.len(),
            "shared tables whose in-place updates skip the live-row check"
        );
        let logged = oplog::move_legacy_rows(&mut tx).await?;
        for def in options.registry.iter() {
            digest::ensure_triggers(&mut tx, def).await?;
            if digest::mark_all_once(&mut tx, def).await? {
                tracing::debug!(resource = %def.name, "rows marked for the digest's first fold");
            }
        }
        tx.commit().await?;
        if logged > 0 {
            tracing::info!(
                ops = logged,
                "dropped the op log of an old version (no proofs of authorship): peers that \
                 lack its ops get a snapshot"
            );
        }
        if moved > 0 {
            tracing::info!(
                rows = moved,
                "moved live rows' registers into their row clocks"
            );
        }

        let mut conn = pool.acquire().await?;
        let (vv, horizon) = versions::load(&mut conn).await?;
        let mut devices = oplog::devices(&mut conn).await?;
        let root = clients::get_meta(&mut conn, MEMBER_ROOT)
            .await?
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(Hash);
        let state = MembersState::new(root, members::events(&mut conn).await?);
        drop(conn);
        let (members_tx, _) = watch::channel(Arc::new(state.folded.clone()));
        devices.insert(signer.author(), client);
        let clock = Clock::new(signer.author(), options.max_drift, options.clock.clone());
        tracing::info!(
            device = %client,
            author = %signer.author(),
            "this store writes under a new author (one per open)"
        );
        let replica = Replica {
            vv,
            horizon,
            tip: Hash::ZERO,
            devices,
        };
        let store = Store {
            inner: Arc::new(Inner {
                writer: Writer::new(
                    pool.clone(),
                    replica,
                    Some((wal_path(&options.path), options.wal_limit)),
                ),
                pool,
                registry: options.registry,
                unborn,
                clock,
                client,
                signer,
                members: std::sync::RwLock::new(Arc::new(state)),
                members_tx,
                forgotten: Default::default(),
            }),
        };
        store.touch_client(client, None).await?;
        store.forget_removed().await?;
        // Indexes a snapshot import left out, with no import under way to build them (it
        // was given up for another that found the tables no longer empty).
        if store.snapshot_progress().await?.is_none() {
            let state = store.members_state();
            store.remote(&state).build_deferred().await?;
        }
        // What a build that did not know its resource or field kept: applied if this
        // registry knows it.
        let state = store.members_state();
        let applied = store.remote(&state).apply_kept().await?;
        if applied > 0 {
            tracing::info!(
                items = applied,
                "applied ops and snapshot rows kept for a schema this build knows"
            );
        }
        Ok(store)
    }

    /// This device's client UUID (the same on every open).
    pub fn client(&self) -> Uuid {
        self.inner.client
    }

    /// The author this store writes under (new on every open).
    pub fn author(&self) -> Uuid {
        self.inner.signer.author()
    }

    /// The key of the author this store writes under (the device's public key and this
    /// incarnation's nonce).
    pub fn author_key(&self) -> crate::proof::AuthorKey {
        self.inner.signer.key()
    }

    /// The device of `author`, if its proof was verified here.
    pub fn device_of(&self, author: &Uuid) -> Option<Uuid> {
        self.inner.writer.read(|r| r.devices.get(author).copied())
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

    /// What the writer's WAL checkpoints did (the WAL's bound: [`WAL_CHECKPOINT_BYTES`](crate::WAL_CHECKPOINT_BYTES)).
    pub fn wal_stats(&self) -> WalStats {
        self.inner.writer.wal_stats()
    }

    /// This replica's version vector.
    pub fn version_vector(&self) -> VersionVector {
        self.inner.writer.read(|r| r.vv.clone())
    }

    /// The per-author horizon: the highest seq pruned from this log.
    pub fn horizon(&self) -> BTreeMap<Uuid, u64> {
        self.inner.writer.read(|r| r.horizon.clone())
    }

    /// Whether a peer with version vector `theirs` is behind this log's horizon (it lacks
    /// ops that were pruned here) and so needs a snapshot before ops.
    /// Authors whose proof this replica never verified (a log of a version before proofs)
    /// are left out: no page can carry their ops, and the snapshot's rows hold them.
    pub fn needs_snapshot(&self, theirs: &VersionVector) -> bool {
        self.needs_snapshot_in(theirs, &crate::page::AuthorRange::ALL)
    }

    /// [`Store::needs_snapshot`] for the authors of `range` only.
    pub fn needs_snapshot_in(
        &self,
        theirs: &VersionVector,
        range: &crate::page::AuthorRange,
    ) -> bool {
        self.inner.writer.read(|r| {
            r.horizon.iter().any(|(a, h)| {
                range.contains(a) && theirs.contiguous(a) < *h && r.devices.contains_key(a)
            })
        })
    }

    /// The commit feed: one [`Commit`] per committed change, whatever its origin (local
    /// writes, remote batches, snapshot imports, pruning), in commit order. At most
    /// [`COMMIT_FEED_CAP`] wait to be taken; beyond that writers wait, so the consumer must
    /// never wait for a write itself. One consumer: a new call replaces the previous feed.
    pub fn commits(&self) -> mpsc::Receiver<Commit> {
        self.inner.writer.subscribe(COMMIT_FEED_CAP)
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

    fn local(&self) -> Local<'_> {
        Local {
            writer: &self.inner.writer,
            registry: &self.inner.registry,
            clock: &self.inner.clock,
            client: self.inner.signer.author(),
            signer: &self.inner.signer,
        }
    }

    fn remote<'a>(&'a self, members: &'a MembersState) -> Remote<'a> {
        Remote {
            writer: &self.inner.writer,
            registry: &self.inner.registry,
            clock: &self.inner.clock,
            unborn: &self.inner.unborn,
            own_author: self.inner.signer.author(),
            members,
        }
    }

    fn members_state(&self) -> Arc<MembersState> {
        match self.inner.members.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Runs bookkeeping `f` (no change of the library) in a write transaction.
    async fn bookkeeping<T>(
        &self,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.inner.writer.begin().await?;
        let out = f(tx.conn()).await?;
        tx.commit_quietly().await?;
        Ok(out)
    }

    // -----------------------------------------------------------------------------------
    // The digest's upkeep and repairs (`fold`, `repair`)

    /// Folds up to `max` dirty leaves of the digest ([`crate::fold`]); returns how many
    /// (0: the digest is up to date). Bookkeeping: nothing goes out on the feed.
    pub async fn fold_digest(&self, max: usize) -> Result<usize, StoreError> {
        self.detached(move |s| async move {
            crate::fold::fold(&s.inner.writer, &s.inner.registry, max).await
        })
        .await
    }

    /// Merges rows the device `peer` sent to repair a divergence ([`crate::repair`]).
    pub async fn repair(
        &self,
        rows: Vec<SnapshotRow>,
        peer: Uuid,
    ) -> Result<crate::repair::RepairReport, StoreError> {
        self.detached(move |s| async move {
            let touched = rows.iter().any(|r| r.resource() == DEVICES_LOG);
            let report = crate::repair::repair(
                &s.inner.writer,
                &s.inner.registry,
                &s.inner.clock,
                rows,
                peer,
            )
            .await?;
            if touched {
                s.refresh_members().await?;
            }
            Ok(report)
        })
        .await
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
        self.detached(move |s| async move { s.local().batch(entries).await })
            .await
    }

    /// Writes owned rows (new or this client's own) with ONE `OwnedBatchCreate` op. Each
    /// row is an object of fields with an optional `uuid`.
    pub async fn write_owned(
        &self,
        resource: &str,
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<WriteOutcome, StoreError> {
        let (def, rows) = self.local().owned_rows(resource, rows)?;
        self.detached(move |s| async move { s.local().write_owned(def, rows).await })
            .await
    }

    /// Deletes one of this client's owned rows.
    pub async fn delete_owned(
        &self,
        resource: &str,
        uuid: Uuid,
    ) -> Result<WriteOutcome, StoreError> {
        let resource = resource.to_owned();
        self.detached(move |s| async move { s.local().delete_owned(&resource, uuid).await })
            .await
    }

    // -----------------------------------------------------------------------------------
    // What peers send

    /// Applies a batch of remote changes in one transaction; the commit says it came from
    /// `origin`. Each op must be covered by one of `proofs` ([`crate::proof`]: signed by its
    /// author, whoever relays it), else it is refused; each change is then validated
    /// (schema, drift, ownership); duplicates are no-ops; delivery order does not matter.
    /// An `OwnedBatchCreate` that arrives without its rows is returned in `needs_rows`.
    pub async fn apply_signed(
        &self,
        batch: Vec<Change>,
        proofs: Vec<Proof>,
        origin: Origin,
    ) -> Result<ApplyReport, StoreError> {
        self.detached(move |s| async move {
            let touched = touches_members(&batch);
            let m = s.members_state();
            let report = s.remote(&m).apply(batch, Some(&proofs), origin).await?;
            if touched {
                s.refresh_members().await?;
            }
            Ok(report)
        })
        .await
    }

    /// Applies remote changes WITHOUT proofs of authorship ([`Origin::CatchUp`]): for the
    /// tests and benches of the merge rules only (the `unverified` feature; the node never
    /// enables it).
    #[cfg(feature = "unverified")]
    pub async fn apply(&self, batch: Vec<Change>) -> Result<ApplyReport, StoreError> {
        self.apply_from(batch, Origin::CatchUp).await
    }

    /// [`Store::apply`] with an origin (the `unverified` feature).
    #[cfg(feature = "unverified")]
    pub async fn apply_from(
        &self,
        batch: Vec<Change>,
        origin: Origin,
    ) -> Result<ApplyReport, StoreError> {
        self.detached(move |s| async move {
            let touched = touches_members(&batch);
            let m = s.members_state();
            let report = s.remote(&m).apply(batch, None, origin).await?;
            if touched {
                s.refresh_members().await?;
            }
            Ok(report)
        })
        .await
    }

    /// Merges a page of snapshot rows into this store, register by register, in one
    /// transaction. Importing into a non-empty store is safe: newer registers win. A row
    /// with a register more than `max_drift` ahead is set aside, not imported: the result
    /// counts it and names the authors whose ops the snapshot must then not claim to cover.
    pub async fn import_snapshot_page(
        &self,
        rows: Vec<SnapshotRow>,
    ) -> Result<SnapshotImport, StoreError> {
        self.import_page(rows, None).await
    }

    /// [`Store::import_snapshot_page`] of a page of the snapshot import under way (begun
    /// with [`Store::begin_snapshot_from`]): records, in the page's transaction, that the
    /// next page starts after `next` (`None`: this was the last) and that the snapshot may
    /// not claim the authors of rows set aside. A restarted node continues from there
    /// ([`Store::snapshot_progress`]).
    pub async fn import_snapshot_page_at(
        &self,
        rows: Vec<SnapshotRow>,
        next: Option<SnapshotPosition>,
    ) -> Result<SnapshotImport, StoreError> {
        self.import_page(rows, Some(next)).await
    }

    /// A snapshot page imported, with the import's progress recorded when `at` is given
    /// (where the next page starts); the membership folded again when the page holds
    /// `devices_log` rows.
    async fn import_page(
        &self,
        rows: Vec<SnapshotRow>,
        at: Option<Option<SnapshotPosition>>,
    ) -> Result<SnapshotImport, StoreError> {
        self.detached(move |s| async move {
            let touched = rows.iter().any(|r| r.resource() == DEVICES_LOG);
            let m = s.members_state();
            let at = at.as_ref().map(Option::as_ref);
            let import = s.remote(&m).import_snapshot_page(rows, at).await?;
            if touched {
                s.refresh_members().await?;
            }
            Ok(import)
        })
        .await
    }

    /// The snapshot import under way (begun, not finished), if any: where it continues and
    /// what it may claim. It survives a restart.
    pub async fn snapshot_progress(&self) -> Result<Option<SnapshotProgress>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        crate::sql::snapshots::load(&mut conn).await
    }

    /// Continues the snapshot import under way, served by `source` (a peer's device, or its
    /// peer id) from after `next`, whose current proofs (the peer's
    /// [`Store::snapshot_proofs`], fetched again) are `now`: learns their authors, and the
    /// snapshot may now claim, per author, only the lower of what it stored and what `now`
    /// proves ([`crate::page::resumed_proofs`]): rows imported before the restart hold the
    /// first, rows imported after it the second. Returns the progress as it now is (None:
    /// no import under way) and the proofs of `now` refused.
    pub async fn resume_snapshot(
        &self,
        source: String,
        next: Option<SnapshotPosition>,
        now: Vec<Proof>,
    ) -> Result<(Option<SnapshotProgress>, Vec<(Uuid, crate::op::Rejection)>), StoreError> {
        self.detached(move |s| async move {
            let m = s.members_state();
            s.remote(&m)
                .resume_snapshot(&source, next.as_ref(), &now)
                .await
        })
        .await
    }

    /// Starts a snapshot import: learns the authors its proofs (from the peer's
    /// [`Store::snapshot_proofs`]) prove, so that its owned rows go to their authors'
    /// devices. Moves no version vector ([`Store::finish_snapshot`] does). Returns the
    /// proofs refused, by author, with why.
    pub async fn begin_snapshot(
        &self,
        proofs: Vec<Proof>,
    ) -> Result<Vec<(Uuid, crate::op::Rejection)>, StoreError> {
        self.detached(move |s| async move {
            let m = s.members_state();
            s.remote(&m).learn_authors(&proofs, None).await
        })
        .await
    }

    /// [`Store::begin_snapshot`], recording a new snapshot import under way (any other is
    /// forgotten), served by `source` (a peer's device, or its peer id) from a registry of
    /// `schema`, that may claim the proofs that verify. Pages imported with
    /// [`Store::import_snapshot_page_at`] move it on; [`Store::finish_snapshot`] ends it.
    pub async fn begin_snapshot_from(
        &self,
        source: String,
        schema: Option<crate::registry::SchemaVersion>,
        proofs: Vec<Proof>,
    ) -> Result<Vec<(Uuid, crate::op::Rejection)>, StoreError> {
        self.detached(move |s| async move {
            let m = s.members_state();
            s.remote(&m)
                .learn_authors(&proofs, Some((&source, schema.as_ref())))
                .await
        })
        .await
    }

    /// Ends a snapshot import: for each of `proofs` (from [`Store::snapshot_proofs`] of the
    /// peer) that verifies, this replica now holds the author's ops up to the proven seq.
    /// Leave out the proofs of the authors of rows a page set aside
    /// ([`SnapshotImport::uncovered`]), so that their ops are fetched again. Returns the
    /// proofs refused, by author, with why. The snapshot import under way, if any, is over
    /// (in the same transaction).
    pub async fn finish_snapshot(
        &self,
        proofs: Vec<Proof>,
    ) -> Result<Vec<(Uuid, crate::op::Rejection)>, StoreError> {
        self.detached(move |s| async move {
            let m = s.members_state();
            // What the import left out is built before the snapshot counts as held. The
            // leaves its pages left dirty are folded first: a digest asked meanwhile then
            // reads without waiting for the writer, which builds an index for a while.
            s.fold_all().await?;
            s.remote(&m).build_deferred().await?;
            s.remote(&m).finish_snapshot(&proofs).await
        })
        .await
    }

    /// Removes from the log every op covered by `horizon` (per author, a seq) and not above
    /// this replica's own contiguous seq, and records the new horizon. Returns how many ops
    /// were removed. Merges are unaffected: the registers live beside the data.
    pub async fn prune(&self, horizon: &BTreeMap<Uuid, u64>) -> Result<u64, StoreError> {
        let horizon = horizon.clone();
        self.detached(move |s| async move {
            let m = s.members_state();
            s.remote(&m).prune(&horizon).await
        })
        .await
    }

    // -----------------------------------------------------------------------------------
    // Membership (`members`)

    /// The membership as last folded ([`crate::members`]).
    pub fn members(&self) -> Arc<Membership> {
        self.inner.members_tx.borrow().clone()
    }

    /// The membership, as it changes.
    pub fn watch_members(&self) -> watch::Receiver<Arc<Membership>> {
        self.inner.members_tx.subscribe()
    }

    /// Records `key` as the membership's trust root (the founder's device key), unless one
    /// is recorded already. Returns whether it was recorded.
    pub async fn set_member_root(&self, key: Hash) -> Result<bool, StoreError> {
        if self.members_state().root.is_some() {
            return Ok(false);
        }
        self.set_meta(MEMBER_ROOT, &key.0).await?;
        self.refresh_members().await?;
        Ok(true)
    }

    /// Signs `event` with this device's key, now, and writes it to `devices_log` (a local
    /// write: it is published and synced like any other).
    pub async fn record_member_event(&self, event: Event) -> Result<SignedEvent, StoreError> {
        let ts = self.inner.clock.now().time;
        let signed = SignedEvent::sign(self.inner.signer.keypair(), ts, event);
        let mut fields = serde_json::Map::new();
        fields.insert(
            EVENT_COLUMN.to_owned(),
            serde_json::Value::String(signed.to_text()),
        );
        self.create_shared(DEVICES_LOG, Some(signed.row_uuid()), fields)
            .await?;
        self.refresh_members().await?;
        Ok(signed)
    }

    /// Reads the events again, folds them, deletes the owned rows of devices removed with
    /// `forget_data` since, and tells the watchers.
    pub async fn refresh_members(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        let root = clients::get_meta(&mut conn, MEMBER_ROOT)
            .await?
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(Hash);
        let events = members::events(&mut conn).await?;
        drop(conn);
        let state = Arc::new(MembersState::new(root, events));
        let folded = Arc::new(state.folded.clone());
        match self.inner.members.write() {
            Ok(mut g) => *g = state,
            Err(p) => *p.into_inner() = state,
        }
        self.forget_removed().await?;
        self.inner.members_tx.send_if_modified(|m| {
            let changed = **m != *folded;
            *m = folded.clone();
            changed
        });
        Ok(())
    }

    /// Deletes the owned rows of every device removed with `forget_data` (once per run;
    /// a device's later ops of owned resources are refused, so nothing brings them back).
    async fn forget_removed(&self) -> Result<(), StoreError> {
        let todo: Vec<Uuid> = {
            let state = self.members_state();
            let done = match self.inner.forgotten.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            };
            state
                .folded
                .forgotten()
                .filter(|c| !done.contains(c))
                .collect()
        };
        for owner in todo {
            let mut tx = self.inner.writer.begin().await?;
            let n = members::forget_owner(tx.conn(), &self.inner.registry, owner).await?;
            tx.commit(|| Commit {
                rows: n as usize,
                ..Commit::new(Origin::Forget)
            })
            .await?;
            if n > 0 {
                tracing::info!(device = %owner, rows = n, "forgot the owned rows of a removed device");
            }
            match self.inner.forgotten.lock() {
                Ok(mut g) => g.insert(owner),
                Err(p) => p.into_inner().insert(owner),
            };
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Bookkeeping: the client pool and node-local settings

    /// Records that `client` was seen now (creating it in the pool if new).
    pub async fn touch_client(
        &self,
        client: Uuid,
        peer_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bookkeeping(async |conn| clients::touch(conn, client, peer_id).await)
            .await
    }

    /// Records a completed catch-up with `client`.
    pub async fn mark_synchronized(&self, client: Uuid) -> Result<(), StoreError> {
        self.bookkeeping(async |conn| clients::mark_synchronized(conn, client).await)
            .await
    }

    /// Records the version vector `client` reported (author -> contiguous seq).
    pub async fn record_client_version(
        &self,
        client: Uuid,
        vv: &BTreeMap<Uuid, u64>,
    ) -> Result<(), StoreError> {
        self.bookkeeping(async |conn| clients::record_version(conn, client, vv).await)
            .await
    }

    /// Writes a node-local setting.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.bookkeeping(async |conn| clients::set_meta(conn, key, value).await)
            .await
    }

    /// What is kept for a build that knows its resource or field (see
    /// [`crate::validate::split_unknown_op`]), per reason (`unknown_resource`,
    /// `unknown_field`): ops and snapshot rows waiting.
    pub async fn kept(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        crate::sql::quarantine::counts(&mut conn).await
    }

    /// How many ops the log holds.
    pub async fn pending_operations(&self) -> Result<u64, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        oplog::pending(&mut conn).await
    }
}

/// Whether a batch holds `devices_log` ops (the membership must be folded again after it).
fn touches_members(batch: &[Change]) -> bool {
    batch.iter().any(|c| c.op().resource == DEVICES_LOG)
}

/// The WAL file of the database at `db` (SQLite names it so).
fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
