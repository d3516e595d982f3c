//! Pulling from one peer (catch-up): asking it for the ops this node lacks, page by page,
//! third parties' ops included, and first importing its state snapshot when this node is
//! behind its log horizon. A [`Puller`] runs in a task of its own and reports its progress
//! into the peer table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use murmur_store::proof::Proof;
use murmur_store::{
    AuthorRange, OpsCursor, Origin, RejectReason, SnapshotPosition, SnapshotProgress, Store,
    StoreError, VersionVector,
};
use tracing::{info, warn};

use super::peers::{PeerTable, PullKind, PullProgress};
use crate::device::DeviceBinding;
use crate::metrics::Metrics;
use crate::protocol::{HAVE_BYTES_CAP, Net, PAGE_SIZE, Request, Response, VV_EXTRA_CAP};

/// Pulls running at once.
pub const PULLS_CAP: usize = 4;
/// The most proofs (authors) of one snapshot taken; a peer that sends more is refused.
pub const SNAPSHOT_PROOFS_CAP: usize = 250_000;
/// How many times one pull lets another pull's snapshot import stand for its own (see
/// `Puller::snapshot`) before it takes one.
const SNAPSHOT_SKIPS: usize = 3;
/// Largest response accepted.
pub const RESPONSE_DECODE_CAP: usize = 16 * 1024 * 1024;

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The peer refused.
    #[error("peer refused: {0}")]
    Refused(String),
    /// The peer answered something unexpected.
    #[error("unexpected response")]
    Unexpected,
    /// The peer sent ops that are not their authors' (a proof that fails, or this node's
    /// own author): it is refused for the rest of its run.
    #[error("the peer sent forged ops: {0}")]
    Forged(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullSummary {
    /// Ops applied.
    pub ops: u64,
    /// Items received (ops, rows, snapshot rows).
    pub items: u64,
    /// Whether a snapshot was imported.
    pub snapshot: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// How the pull of one author range ended.
enum RangeEnd {
    /// Every page was applied.
    Done,
    /// The peer says this node needs its snapshot first.
    SnapshotRequired,
    /// This node's vector in the range no longer fits one request.
    Outgrown,
}

/// One catch-up with one peer.
pub(super) struct Puller {
    pub(super) store: Store,
    pub(super) net: Net,
    pub(super) peer: PeerId,
    pub(super) metrics: Arc<Metrics>,
    /// Where the progress is shown.
    pub(super) peers: PeerTable,
    /// This node's device, told to the peer first (it answers members only).
    pub(super) device: DeviceBinding,
    /// Held by the one snapshot import running (its progress is one record).
    pub(super) snapshot_turn: Arc<tokio::sync::Mutex<()>>,
}

/// A snapshot import begun or continued: what it may claim, rows done, rows in the
/// snapshot, and the answer to its first page.
struct Import {
    proofs: Vec<Proof>,
    done: u64,
    total: u64,
    first: Response,
}

impl Puller {
    /// Pulls, then clears the progress and, on success, marks the peer's client synchronized
    /// if its device is known by then (the sync loop pulls again when it learns it).
    pub(super) async fn run(self) -> Result<PullSummary, PullError> {
        let res = self.pull().await;
        self.peers.clear_progress(&self.peer);
        if res.is_ok() {
            self.metrics.catchups.inc();
            if let Some(client) = self.peers.client(&self.peer)
                && let Err(e) = self.store.mark_synchronized(client).await
            {
                warn!("client pool: {e}");
            }
        }
        res
    }

    fn progress(&self, kind: PullKind, done: u64, total: u64) {
        self.peers.set_progress(
            &self.peer,
            PullProgress {
                kind,
                done,
                total: total.max(done),
            },
        );
    }

    async fn request(&self, req: Request) -> Result<Response, PullError> {
        match self.net.request(self.peer, req).await {
            Ok(Response::Error(e)) => Err(PullError::Refused(e)),
            Ok(Response::Refused { reason }) => {
                warn!(peer = %self.peer, "the peer refuses this device: {reason}");
                Err(PullError::Refused(reason.to_string()))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(PullError::Request(e.to_string())),
        }
    }

    /// Pulls what the peer has and this node lacks: in one round when this node's version
    /// vector fits one request ([`HAVE_BYTES_CAP`]), else in one round per author range
    /// ([`VersionVector::split_by_bytes`]), each request carrying the part of the vector in
    /// its range. A node behind the peer's horizon takes its snapshot, then pulls again.
    async fn pull(&self) -> Result<PullSummary, PullError> {
        let started = Instant::now();
        // Which device this is: the peer answers a member's requests only.
        match self
            .request(Request::Hello {
                device: self.device,
            })
            .await?
        {
            Response::Welcome => self.peers.set_welcomed(&self.peer),
            _ => return Err(PullError::Unexpected),
        }
        // (A refusal was returned above as `PullError::Refused`, and logged by the loop.)
        let mut summary = PullSummary::default();
        let mut total = 0u64;
        let mut skips = 0;
        'again: loop {
            let parts = self.have().split_by_bytes(HAVE_BYTES_CAP);
            let whole = parts.len() == 1;
            for (range, _) in parts {
                let range = (!whole).then_some(range);
                match self.pull_range(range, &mut summary, &mut total).await? {
                    RangeEnd::Done => {}
                    // The vector outgrew its ranges (this pull brought new authors): cut it
                    // again; what was pulled is not asked for again.
                    RangeEnd::Outgrown => continue 'again,
                    RangeEnd::SnapshotRequired => {
                        if summary.snapshot {
                            // A second snapshot in one pull would loop: stop, retry later.
                            return Err(PullError::Refused(
                                "still behind the horizon after a snapshot".into(),
                            ));
                        }
                        skips += 1;
                        self.snapshot(&mut summary, skips <= SNAPSHOT_SKIPS).await?;
                        continue 'again;
                    }
                }
            }
            break;
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// This node's version vector as requests carry it (`extra` sets bounded).
    fn have(&self) -> VersionVector {
        self.store.version_vector().truncated(VV_EXTRA_CAP)
    }

    /// The request for the page of `range` at `cursor`, with this node's version vector as
    /// it is now (in `range`): the peer may have pruned what this node received meanwhile.
    /// `None` when that part of the vector no longer fits one request.
    fn ops_request(&self, range: Option<AuthorRange>, cursor: OpsCursor) -> Option<Request> {
        let have = match &range {
            Some(r) => self.have().within(r),
            None => self.have(),
        };
        (have.wire_size() <= HAVE_BYTES_CAP).then_some(Request::OpsSince {
            have,
            cursor,
            limit: PAGE_SIZE as u32,
            range,
        })
    }

    /// Pulls the ops of `range` (None: every author) this node lacks. Pages are pipelined:
    /// the request for page n+1 (its cursor is in page n) is in flight while page n is
    /// applied, so the peer's read and encode and the transfer overlap the local apply.
    async fn pull_range(
        &self,
        range: Option<AuthorRange>,
        summary: &mut PullSummary,
        total: &mut u64,
    ) -> Result<RangeEnd, PullError> {
        let mut last_log = Instant::now();
        let Some(req) = self.ops_request(range, OpsCursor::default()) else {
            return Ok(RangeEnd::Outgrown);
        };
        let Request::OpsSince { have, .. } = &req else {
            return Err(PullError::Unexpected);
        };
        let have = have.clone();
        let mut resp = self.request(req).await?;
        let mut first = true;
        loop {
            match resp {
                Response::SnapshotRequired => return Ok(RangeEnd::SnapshotRequired),
                Response::Ops { page, server } => {
                    if first {
                        *total = total.saturating_add(
                            server
                                .iter()
                                .map(|(a, s)| s.saturating_sub(have.contiguous(a)))
                                .fold(0u64, u64::saturating_add),
                        );
                        first = false;
                    }
                    let total = *total;
                    let items: u64 = page.changes.iter().map(|c| c.weight() as u64).sum();
                    // The next request carries the version vector from before this page is
                    // applied: the cursor, not the vector, says where the peer resumes, and
                    // anything sent twice is a duplicate, which apply skips.
                    let next = match page.next {
                        Some(cursor) => match self.ops_request(range, cursor) {
                            Some(req) => Some(req),
                            None => return Ok(RangeEnd::Outgrown),
                        },
                        None => None,
                    };
                    let apply = async {
                        if page.changes.is_empty() {
                            return Ok(None);
                        }
                        self.store
                            .apply_signed(page.changes, page.proofs, Origin::CatchUp)
                            .await
                            .map(Some)
                    };
                    let fetch = async {
                        match next {
                            Some(req) => Some(self.request(req).await),
                            None => None,
                        }
                    };
                    let (applied, fetched) = tokio::join!(apply, fetch);
                    if let Some(report) = applied? {
                        summary.ops += report.applied as u64;
                        summary.items += items;
                        self.refuse_forger(&report).await?;
                    }
                    self.progress(PullKind::CatchUp, summary.items, total);
                    if total > PAGE_SIZE as u64 && last_log.elapsed() > Duration::from_secs(1) {
                        info!(done = summary.items, total, "catching up");
                        last_log = Instant::now();
                    }
                    match fetched {
                        Some(r) => resp = r?,
                        None => return Ok(RangeEnd::Done),
                    }
                }
                _ => return Err(PullError::Unexpected),
            }
        }
    }

    /// An honest peer verified every op it sends (it stores no other), so a page with an op
    /// whose proof fails, or one of this node's own author, comes from a forger: it is
    /// blocked for the rest of its run (its peer id is new at every start) and counted.
    /// Ops with no proof at all are refused and counted but not penalised here.
    async fn refuse_forger(&self, report: &murmur_store::ApplyReport) -> Result<(), PullError> {
        let forged = report.rejected.iter().find(|(_, r)| {
            matches!(
                r.reason,
                murmur_store::RejectReason::BadProof | murmur_store::RejectReason::OwnAuthor
            )
        });
        let Some((id, why)) = forged else {
            return Ok(());
        };
        warn!(peer = %self.peer, op = %id, "refusing the peer for this run: {why}");
        self.metrics.peers_refused.inc();
        if let Err(e) = self.net.block(self.peer).await {
            warn!("cannot block the peer: {e}");
        }
        Err(PullError::Forged(format!("op {id}: {why}")))
    }

    /// Where this pull's snapshot comes from, as the progress records it: the peer's
    /// device when known (it names the same node across its restarts), else its peer id.
    fn source(&self) -> String {
        match self.peers.client(&self.peer) {
            Some(device) => device.to_string(),
            None => self.peer.to_string(),
        }
    }

    /// Every proof of the peer's snapshot, in pages (all of them before any row: rows
    /// read after the proofs hold the effect of every op they cover).
    async fn snapshot_proofs(&self) -> Result<Vec<Proof>, PullError> {
        let mut proofs = Vec::new();
        let mut after = None;
        loop {
            let Response::SnapshotProofs { proofs: p, next } =
                self.request(Request::SnapshotProofs { after }).await?
            else {
                return Err(PullError::Unexpected);
            };
            // A page that does not move on would loop.
            if next.is_some() && (p.is_empty() || next <= after) {
                return Err(PullError::Unexpected);
            }
            proofs.extend(p);
            if proofs.len() > SNAPSHOT_PROOFS_CAP {
                return Err(PullError::Refused(format!(
                    "a snapshot of more than {SNAPSHOT_PROOFS_CAP} authors"
                )));
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(proofs),
            }
        }
    }

    fn count_refused(&self, refused: Vec<(uuid::Uuid, murmur_store::Rejection)>) {
        for (author, why) in refused {
            self.metrics.reject(why.label());
            warn!(peer = %self.peer, %author, "a snapshot's author was refused: {why}");
        }
    }

    /// Imports the peer's state snapshot, page by page, with the next page's request in
    /// flight while a page is imported; or continues the import that a previous run of
    /// this node left unfinished (`Store::snapshot_progress`). One import runs at a time
    /// (its progress is one record): a pull that finds another running waits for it, and
    /// returns false without a snapshot when this node's version vector moved meanwhile
    /// (and `may_skip`), so that its caller asks for ops again first.
    async fn snapshot(&self, summary: &mut PullSummary, may_skip: bool) -> Result<bool, PullError> {
        let before = self.store.version_vector();
        let _turn = self.snapshot_turn.lock().await;
        if may_skip && self.store.version_vector() != before {
            return Ok(false);
        }
        info!(peer = %self.peer, "behind the peer's log horizon: taking a state snapshot");
        let now = self.snapshot_proofs().await?;
        let source = self.source();
        let stored = self
            .store
            .snapshot_progress()
            .await?
            .filter(SnapshotProgress::started);
        let import = match stored {
            Some(p) if p.done => {
                // Every page was in before the restart: only the end is left.
                self.metrics.snapshots_resumed.inc();
                info!(
                    rows = p.rows,
                    "finishing the snapshot import of a previous run"
                );
                self.store.finish_snapshot(p.proofs).await?;
                self.metrics.snapshots_imported.inc();
                summary.snapshot = true;
                return Ok(true);
            }
            Some(p) => self.resume(p, &source, now.clone()).await?,
            None => None,
        };
        let Import {
            mut proofs,
            mut done,
            total,
            first,
        } = match import {
            Some(i) => i,
            None => self.start_snapshot(source, now).await?,
        };
        let request = |position| Request::Snapshot {
            position,
            limit: PAGE_SIZE as u32,
            resume: false,
        };
        let mut last_log = Instant::now();
        let mut imported_here = 0u64;
        // Authors of rows set aside: the snapshot does not claim to cover their ops.
        let mut uncovered = std::collections::BTreeSet::new();
        let mut resp = first;
        loop {
            let Response::Snapshot { rows, next, .. } = resp else {
                return Err(PullError::Unexpected);
            };
            done += rows.len() as u64;
            imported_here += rows.len() as u64;
            let fetch = async {
                match &next {
                    Some(n) => Some(self.request(request(Some(n.clone()))).await),
                    None => None,
                }
            };
            let (imported, fetched) = tokio::join!(
                self.store.import_snapshot_page_at(rows, next.clone()),
                fetch
            );
            let imported = imported?;
            self.metrics.snapshot_pages_imported.inc();
            self.metrics
                .snapshot_rows_imported
                .inc_by(imported.imported as u64);
            if imported.set_aside > 0 {
                warn!(
                    rows = imported.set_aside,
                    "snapshot rows with a timestamp beyond the drift bound set aside: fetched again later"
                );
                for _ in 0..imported.set_aside {
                    self.metrics.reject(RejectReason::Drift.label());
                }
                uncovered.extend(imported.uncovered);
            }
            self.progress(PullKind::Snapshot, done, total);
            if last_log.elapsed() > Duration::from_secs(1) {
                info!(done, total, "importing snapshot");
                last_log = Instant::now();
            }
            match fetched {
                Some(r) => resp = r?,
                None => break,
            }
        }
        // The authors of rows set aside are left out: the snapshot does not cover their ops,
        // which come again (by catch-up, or a later snapshot). Refusals were counted when
        // the snapshot began. (Those of pages before a restart left the stored proofs in
        // the page's transaction.)
        proofs.retain(|p| !uncovered.contains(&p.key.author()));
        self.store.finish_snapshot(proofs).await?;
        self.metrics.snapshots_imported.inc();
        info!(rows = done, here = imported_here, "snapshot imported");
        summary.items += imported_here;
        summary.snapshot = true;
        Ok(true)
    }

    /// Starts a new snapshot import from the peer, whose proofs are `proofs`: asks for its
    /// first page, then records the import (with the schema the page names).
    async fn start_snapshot(
        &self,
        source: String,
        proofs: Vec<Proof>,
    ) -> Result<Import, PullError> {
        let first = self
            .request(Request::Snapshot {
                position: None,
                limit: PAGE_SIZE as u32,
                resume: false,
            })
            .await?;
        let Response::Snapshot {
            total_rows, schema, ..
        } = &first
        else {
            return Err(PullError::Unexpected);
        };
        let total = total_rows.unwrap_or(0);
        let refused = self
            .store
            .begin_snapshot_from(source, *schema, proofs.clone())
            .await?;
        self.count_refused(refused);
        Ok(Import {
            proofs,
            done: 0,
            total,
            first,
        })
    }

    /// Continues the import `stored` with the peer, whose proofs are now `now`; None when
    /// it cannot (the peer refuses the position, or runs another schema, whose order of
    /// resources may differ): the caller starts again from the beginning (the rows
    /// imported stay, and merge with the new snapshot's like any rows).
    ///
    /// Why continuing is safe with another state (the peer's, moved on; or another peer's
    /// of the same schema): rows are merged by the CRDT rules, so a row read twice or from
    /// two states ends as the merge of both; and the finished snapshot claims, per author,
    /// only the lower seq of what the state before the restart proved and what this one
    /// proves (`murmur_store::resumed_proofs`), which every row imported holds, whichever
    /// state it came from. Ops above it come by catch-up (or, if pruned meanwhile, by a
    /// later snapshot). The kept phase's positions are the server's own ids: with another
    /// server it starts over.
    async fn resume(
        &self,
        stored: SnapshotProgress,
        source: &str,
        now: Vec<Proof>,
    ) -> Result<Option<Import>, PullError> {
        let mut next = stored.next.clone();
        if stored.source != source && next.as_ref().is_some_and(SnapshotPosition::is_kept_phase) {
            next = Some(SnapshotPosition::kept_start());
        }
        let first = match self
            .request(Request::Snapshot {
                position: next.clone(),
                limit: PAGE_SIZE as u32,
                resume: true,
            })
            .await
        {
            Ok(r) => r,
            Err(PullError::Refused(e)) => {
                info!(peer = %self.peer, "the peer cannot continue the snapshot import ({e}): from the start");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Response::Snapshot {
            total_rows, schema, ..
        } = &first
        else {
            return Err(PullError::Unexpected);
        };
        if *schema != stored.schema {
            info!(peer = %self.peer, "the peer runs another schema than the snapshot import began with: from the start");
            return Ok(None);
        }
        let total = total_rows.unwrap_or(0);
        let (progress, refused) = self
            .store
            .resume_snapshot(source.to_owned(), next, now)
            .await?;
        self.count_refused(refused);
        let Some(progress) = progress else {
            return Ok(None);
        };
        self.metrics.snapshots_resumed.inc();
        info!(
            peer = %self.peer,
            pages = stored.pages,
            rows = stored.rows,
            same_source = stored.source == source,
            "continuing the snapshot import where a previous run stopped"
        );
        Ok(Some(Import {
            proofs: progress.proofs,
            done: stored.rows,
            total,
            first,
        }))
    }
}
