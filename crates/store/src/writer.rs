//! The one writer: every transaction that writes the library goes through [`Writer::begin`]
//! and [`WriteTx::commit`].
//!
//! A [`WriteTx`] holds the write lock (so commits happen in the order their timestamps and
//! sequence numbers were taken), an SQLite `BEGIN IMMEDIATE` transaction, and a copy of the
//! replica's state (version vector and log horizon) that the transaction changes. Commit
//! writes SQLite first; only then does the copy become the replica's state, and the
//! [`Commit`] go out on the commit feed, still under the lock, so the feed's order is the
//! commit order. A transaction dropped without commit (an error, a panic) rolls back and
//! leaves the state as it was.
//!
//! The feed is bounded: a consumer that falls behind makes writers wait (back-pressure),
//! never lose a commit. Without a consumer nothing is sent.
//!
//! ## The WAL's bound
//!
//! SQLite's automatic checkpoints are passive: while readers overlap without a pause (a
//! peer's snapshot pages, digest calls, the app's reads), none reaches the end of the WAL,
//! so the WAL never starts over and grows without bound. After a commit, the writer looks
//! at the WAL file's size (one `stat`); past [`WAL_CHECKPOINT_BYTES`] it runs
//! `wal_checkpoint(TRUNCATE)` in a task of its own that takes the write turn (so no write
//! is under way) and waits at most [`CHECKPOINT_BUSY_MS`] for readers; if they hold on, it
//! gives up until a commit at least [`CHECKPOINT_RETRY`] later, or one that finds the WAL
//! grown by half its limit since. `journal_size_limit` (set
//! when the store opens) truncates a WAL that SQLite restarts by itself.
//!
//! ## Cancellation safety
//! [`WriteTx::commit`] must not be cancelled between SQLite's commit and the state update:
//! the store runs every write in a task of its own (`Store::detached`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{MutexGuard, mpsc};
use uuid::Uuid;

use crate::commit::Commit;
use crate::error::StoreError;
use crate::op::VersionVector;
use crate::proof::Hash;

/// What this replica holds: the ops applied, and per author the highest seq pruned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replica {
    /// Ops applied.
    pub vv: VersionVector,
    /// Per author, the highest seq pruned from the log.
    pub horizon: BTreeMap<Uuid, u64>,
    /// This replica's own author's chain hash at its last op.
    pub tip: Hash,
    /// Per author whose proof was verified here (and this replica's own), its device.
    pub devices: std::collections::HashMap<Uuid, Uuid>,
}

/// The WAL size past which a commit starts a truncating checkpoint, by default
/// (`StoreOptions::wal_limit`).
pub const WAL_CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// How long a truncating checkpoint waits for readers before it gives up (for now).
pub const CHECKPOINT_BUSY_MS: u64 = 200;
/// How long after a checkpoint that readers made give up the next one may start.
pub const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
/// The busy timeout of the store's connections, set back after a checkpoint.
pub(crate) const BUSY_TIMEOUT_MS: u64 = 10_000;

/// What the writer's checkpoints did (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Truncating checkpoints that completed.
    pub checkpoints: u64,
    /// Truncating checkpoints that gave up (readers held on past the wait).
    pub gave_up: u64,
    /// The largest WAL size a commit saw, in bytes.
    pub peak_bytes: u64,
}

/// The WAL's file and what its checkpoints did.
struct Wal {
    path: PathBuf,
    /// The size past which a commit starts a checkpoint.
    limit: u64,
    /// A checkpoint task is running.
    running: AtomicBool,
    /// When the last checkpoint gave up.
    gave_up_at: Mutex<Option<Instant>>,
    /// The WAL's size when it did.
    gave_up_len: AtomicU64,
    checkpoints: AtomicU64,
    gave_up: AtomicU64,
    peak: AtomicU64,
}

/// Owns the write lock, the replica's state and the commit feed.
pub(crate) struct Writer {
    pool: SqlitePool,
    /// Taken by every write transaction, for its whole life (and by a checkpoint).
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The WAL, when the database is a file.
    wal: Option<Arc<Wal>>,
    /// Changed only by [`WriteTx::commit`], with `turn` held.
    replica: RwLock<Replica>,
    /// The commit feed's sender, once somebody subscribed.
    feed: Mutex<Option<mpsc::Sender<Commit>>>,
}

impl Writer {
    /// A writer over `pool`, whose database holds `replica` and whose WAL is the file
    /// `wal.0`, checkpointed past `wal.1` bytes (None: no checkpoints of the writer's own).
    pub(crate) fn new(pool: SqlitePool, replica: Replica, wal: Option<(PathBuf, u64)>) -> Writer {
        Writer {
            pool,
            turn: Arc::new(tokio::sync::Mutex::new(())),
            wal: wal.map(|(path, limit)| {
                Arc::new(Wal {
                    path,
                    limit,
                    running: AtomicBool::new(false),
                    gave_up_at: Mutex::new(None),
                    gave_up_len: AtomicU64::new(0),
                    checkpoints: AtomicU64::new(0),
                    gave_up: AtomicU64::new(0),
                    peak: AtomicU64::new(0),
                })
            }),
            replica: RwLock::new(replica),
            feed: Mutex::new(None),
        }
    }

    /// Reads the replica's state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Replica) -> T) -> T {
        f(&self.replica.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The commit feed, holding up to `cap` commits not yet taken. A new subscriber
    /// replaces the previous one (whose feed then ends).
    pub(crate) fn subscribe(&self, cap: usize) -> mpsc::Receiver<Commit> {
        let (tx, rx) = mpsc::channel(cap.max(1));
        *self.feed.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Starts a write transaction: waits for the write lock, then `BEGIN IMMEDIATE`.
    pub(crate) async fn begin(&self) -> Result<WriteTx<'_>, StoreError> {
        let turn = self.turn.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (vv, tip) = self.read(|r| (r.vv.clone(), r.tip));
        Ok(WriteTx {
            writer: self,
            _turn: turn,
            tx,
            vv,
            horizon: None,
            tip,
            learned: Vec::new(),
        })
    }

    /// The write turn and a connection of its own, outside any transaction, for a write
    /// that must first set a pragma SQLite refuses to change inside one (building an index
    /// with its sort on disk: `sql::deferred`). The caller runs its own `BEGIN IMMEDIATE`
    /// and `COMMIT`, then [`OwnTurn::done`]. The connection is closed when the turn is
    /// dropped, so what the caller set (and a transaction an error left open) goes with
    /// it. Such a write changes no synced data: nothing goes out on the feed.
    pub(crate) async fn own_turn(&self) -> Result<OwnTurn<'_>, StoreError> {
        let turn = self.turn.lock().await;
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        Ok(OwnTurn {
            writer: self,
            _turn: turn,
            conn,
        })
    }

    /// A read outside the write turn.
    pub(crate) async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// What the writer's checkpoints did.
    pub(crate) fn wal_stats(&self) -> WalStats {
        self.wal
            .as_ref()
            .map_or_else(WalStats::default, |w| WalStats {
                checkpoints: w.checkpoints.load(Ordering::Relaxed),
                gave_up: w.gave_up.load(Ordering::Relaxed),
                peak_bytes: w.peak.load(Ordering::Relaxed),
            })
    }

    /// After a commit: starts a truncating checkpoint if the WAL is past its limit
    /// ([`WAL_CHECKPOINT_BYTES`] by default), none runs, and the last one did not give up less than
    /// [`CHECKPOINT_RETRY`] ago (see the module docs).
    fn after_commit(&self) {
        let Some(wal) = &self.wal else { return };
        let Ok(len) = std::fs::metadata(&wal.path).map(|m| m.len()) else {
            return;
        };
        wal.peak.fetch_max(len, Ordering::Relaxed);
        if len < wal.limit {
            return;
        }
        // After a give-up, the next try waits for a second, or for the WAL to grow by half
        // its limit again, whichever comes first: readers that keep it from the WAL's
        // reset cannot let it grow by more than that between tries.
        let grown = len
            >= wal
                .gave_up_len
                .load(Ordering::Relaxed)
                .saturating_add(wal.limit / 2);
        let recent = !grown
            && wal
                .gave_up_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|t| t.elapsed() < CHECKPOINT_RETRY);
        if recent || wal.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, turn, wal) = (self.pool.clone(), self.turn.clone(), wal.clone());
        tokio::spawn(async move {
            let _turn = turn.lock().await;
            match checkpoint(&pool).await {
                Ok(true) => {
                    wal.checkpoints.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(bytes = len, "WAL checkpointed and truncated");
                }
                Ok(false) => {
                    wal.gave_up.fetch_add(1, Ordering::Relaxed);
                    wal.gave_up_len.store(len, Ordering::Relaxed);
                    *wal.gave_up_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    tracing::debug!(bytes = len, "WAL checkpoint gave up: readers held on");
                }
                Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
            }
            wal.running.store(false, Ordering::Release);
        });
    }

    /// Whether the feed has a consumer (commits are built only then).
    pub(crate) fn has_feed(&self) -> bool {
        self.feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Sends what a remote batch that committed nothing refused or skipped, so that it is
    /// counted where every commit is.
    pub(crate) async fn report(&self, make: impl FnOnce() -> Commit) {
        if self.has_feed() {
            self.send(make()).await;
        }
    }

    async fn send(&self, commit: Commit) {
        let feed = self
            .feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(feed) = feed
            && feed.send(commit).await.is_err()
        {
            // The consumer is gone (the node is stopping): stop sending.
            let mut slot = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|s| s.same_channel(&feed)) {
                *slot = None;
            }
        }
    }
}

/// The write turn with a connection of its own ([`Writer::own_turn`]).
pub(crate) struct OwnTurn<'w> {
    writer: &'w Writer,
    _turn: MutexGuard<'w, ()>,
    conn: sqlx::pool::PoolConnection<Sqlite>,
}

impl OwnTurn<'_> {
    /// The connection, outside any transaction until the caller begins one.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// After the caller committed: the WAL's bound is looked at as after any commit.
    pub(crate) fn done(self) {
        let writer = self.writer;
        drop(self);
        writer.after_commit();
    }
}

/// A write transaction (see the module docs).
pub(crate) struct WriteTx<'w> {
    writer: &'w Writer,
    _turn: MutexGuard<'w, ()>,
    tx: Transaction<'static, Sqlite>,
    /// The version vector as this transaction leaves it.
    vv: VersionVector,
    /// The log horizon, once this transaction changes it.
    horizon: Option<BTreeMap<Uuid, u64>>,
    /// The own author's chain hash as the transaction leaves it.
    tip: Hash,
    /// Authors proven by this transaction, with their devices.
    learned: Vec<(Uuid, Uuid)>,
}

impl<'w> WriteTx<'w> {
    /// The transaction's connection.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// The connection and the version vector the transaction advances.
    pub(crate) fn parts(&mut self) -> (&mut SqliteConnection, &mut VersionVector) {
        (&mut self.tx, &mut self.vv)
    }

    /// The version vector as the transaction has it so far.
    pub(crate) fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The own author's chain hash at its last op, as the transaction has it.
    pub(crate) fn tip(&self) -> Hash {
        self.tip
    }

    /// Every author's device known here, with those this transaction proved.
    pub(crate) fn devices(&self) -> std::collections::HashMap<Uuid, Uuid> {
        let mut d = self.writer.read(|r| r.devices.clone());
        d.extend(self.learned.iter().copied());
        d
    }

    /// Records that the transaction proved `author`'s key, of `device`.
    pub(crate) fn learn(&mut self, author: Uuid, device: Uuid) {
        self.learned.push((author, device));
    }

    /// Moves the own author's chain hash (with the ops this transaction logs).
    pub(crate) fn set_tip(&mut self, tip: Hash) {
        self.tip = tip;
    }

    /// The log horizon, to change; the connection beside it.
    pub(crate) fn horizon_mut(&mut self) -> (&mut SqliteConnection, &mut BTreeMap<Uuid, u64>) {
        let writer = self.writer;
        let horizon = self
            .horizon
            .get_or_insert_with(|| writer.read(|r| r.horizon.clone()));
        (&mut self.tx, horizon)
    }

    /// Rolls back what the transaction did and starts again, still holding the lock.
    pub(crate) async fn restart(self) -> Result<Self, StoreError> {
        let WriteTx {
            writer, _turn, tx, ..
        } = self;
        tx.rollback().await?;
        let (vv, tip) = writer.read(|r| (r.vv.clone(), r.tip));
        Ok(WriteTx {
            writer,
            _turn,
            tx: writer.pool.begin_with("BEGIN IMMEDIATE").await?,
            vv,
            horizon: None,
            tip,
            learned: Vec::new(),
        })
    }

    /// Commits; then the replica's state becomes the transaction's, and the commit `make`
    /// builds goes out on the feed (built only when the feed has a consumer).
    pub(crate) async fn commit(self, make: impl FnOnce() -> Commit) -> Result<(), StoreError> {
        self.finish(Some(make)).await
    }

    /// Commits bookkeeping that is no change of the library (the client pool, settings):
    /// nothing goes out on the feed.
    pub(crate) async fn commit_quietly(self) -> Result<(), StoreError> {
        self.finish(None::<fn() -> Commit>).await
    }

    async fn finish(self, make: Option<impl FnOnce() -> Commit>) -> Result<(), StoreError> {
        let WriteTx {
            writer,
            _turn,
            tx,
            vv,
            horizon,
            tip,
            learned,
        } = self;
        tx.commit().await?;
        {
            let mut replica = writer
                .replica
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            replica.vv = vv;
            replica.tip = tip;
            replica.devices.extend(learned);
            if let Some(h) = horizon {
                replica.horizon = h;
            }
        }
        // Still holding the turn: the feed's order is the commit order.
        if let Some(make) = make
            && writer.has_feed()
        {
            writer.send(make()).await;
        }
        writer.after_commit();
        Ok(())
    }
}

/// `wal_checkpoint(TRUNCATE)` on a connection of `pool`, waiting at most
/// [`CHECKPOINT_BUSY_MS`] for readers (the connection's busy timeout is set back after).
/// Whether it completed (false: readers held on, or a lock was not had in time).
async fn checkpoint(pool: &SqlitePool) -> Result<bool, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}"
    )))
    .execute(&mut *conn)
    .await?;
    let res = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
    )))
    .execute(&mut *conn)
    .await?;
    match res {
        Ok((busy, _, _)) => Ok(busy == 0),
        Err(sqlx::Error::Database(e))
            if e.message().contains("locked") || e.message().contains("busy") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
