//! Pulling from one peer (catch-up): asking it for the ops this node lacks, page by page,
//! third parties' ops included, and first importing its state snapshot when this node is
//! behind its log horizon. A [`Puller`] runs in a task of its own and reports its progress
//! into the peer table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use murmur_store::{
    AuthorRange, OpsCursor, Origin, RejectReason, Store, StoreError, VersionVector,
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
                        self.snapshot(&mut summary).await?;
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

    /// Imports the peer's state snapshot, page by page, with the next page's request in
    /// flight while a page is imported.
    async fn snapshot(&self, summary: &mut PullSummary) -> Result<(), PullError> {
        info!(peer = %self.peer, "behind the peer's log horizon: taking a state snapshot");
        let request = |position| Request::Snapshot {
            position,
            limit: PAGE_SIZE as u32,
        };
        // Every proof first, then the rows: rows read after the proofs hold the effect of
        // every op they cover.
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
                None => break,
            }
        }
        for (author, why) in self.store.begin_snapshot(proofs.clone()).await? {
            self.metrics.reject(why.label());
            warn!(peer = %self.peer, %author, "a snapshot's author was refused: {why}");
        }
        let mut first = true;
        let mut total = 0;
        let mut done = 0u64;
        let mut last_log = Instant::now();
        // Authors of rows set aside: the snapshot does not claim to cover their ops.
        let mut uncovered = std::collections::BTreeSet::new();
        let mut resp = self.request(request(None)).await?;
        loop {
            let Response::Snapshot {
                rows,
                next,
                total_rows,
            } = resp
            else {
                return Err(PullError::Unexpected);
            };
            if first {
                total = total_rows.unwrap_or(0);
                first = false;
            }
            done += rows.len() as u64;
            let fetch = async {
                match next {
                    Some(n) => Some(self.request(request(Some(n))).await),
                    None => None,
                }
            };
            let (imported, fetched) = tokio::join!(self.store.import_snapshot_page(rows), fetch);
            let imported = imported?;
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
        // the snapshot began.
        proofs.retain(|p| !uncovered.contains(&p.key.author()));
        self.store.finish_snapshot(proofs).await?;
        self.metrics.snapshots_imported.inc();
        info!(rows = done, "snapshot imported");
        summary.items += done;
        summary.snapshot = true;
        Ok(())
    }
}
