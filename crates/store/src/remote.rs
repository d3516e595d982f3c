//! What peers send, written through the [`Writer`]: batches of remote changes (validated,
//! duplicates skipped, drift checked, then merged), snapshot pages and the end of a
//! snapshot, and the pruning of the log.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::clock::Clock;
use crate::commit::{Commit, Origin};
use crate::engine::{self, Mode, Unborn};
use crate::error::StoreError;
use crate::members::{DEVICES_LOG, EVENT_COLUMN, MembersState, SignedEvent, Standing};
use crate::op::{
    ApplyReport, Change, Method, OpId, RejectReason, Rejection, SnapshotImport, SnapshotRow,
    VersionVector,
};
use crate::page::{SnapshotPosition, SnapshotProgress, resumed_proofs};
use crate::proof::{Chain, Proof, ProofError, check_batch, check_rows};
use crate::registry::Registry;
use crate::registry::SchemaVersion;
use crate::sql::quarantine::{self, Kept};
use crate::sql::{batches, deferred, oplog, snapshots, versions};
use crate::validate::{
    Unknown, split_unknown_op, split_unknown_row, validate_change, validate_op,
    validate_snapshot_row,
};
use crate::writer::{WriteTx, Writer};

/// What writing peers' changes needs.
pub(crate) struct Remote<'a> {
    /// The one writer.
    pub writer: &'a Writer,
    /// The synced resources.
    pub registry: &'a Registry,
    /// Checks remote timestamps for drift, and moves past them.
    pub clock: &'a Clock,
    /// The shared tables whose in-place updates skip the live-row check.
    pub unborn: &'a Unborn,
    /// This replica's own author: it wrote every op of its own, so none comes from a peer.
    pub own_author: Uuid,
    /// The membership's events and root: ops of devices that are not members, or were
    /// removed before they were stamped, are refused.
    pub members: &'a MembersState,
}

impl Remote<'_> {
    /// Applies a batch of remote changes in one transaction. Each change is validated
    /// (schema, drift, ownership); duplicates are no-ops; delivery order does not matter.
    /// An `OwnedBatchCreate` that arrives without its rows is returned in `needs_rows`.
    ///
    /// `proofs` prove the batch's ops (see [`crate::proof`]): an op no valid proof covers is
    /// refused. `None` applies the batch unproven (tests and benches of the merge rules).
    pub(crate) async fn apply(
        &self,
        batch: Vec<Change>,
        proofs: Option<&[Proof]>,
        origin: Origin,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        // Proofs first, outside the write lock: signatures and hashes need no database. An
        // owned batch's rows must be the ones its (proven) header commits to.
        let checked = proofs.map(|p| check_batch(batch.iter().map(Change::op), p));
        let rows_checked: Vec<Option<Result<usize, ProofError>>> = batch
            .iter()
            .map(|c| match c {
                Change::OwnedRows {
                    header,
                    rows,
                    last,
                    first_group,
                } if proofs.is_some() => Some(check_rows(header, *first_group, rows, *last)),
                _ => None,
            })
            .collect();
        // The membership, with the events this batch brings (they are self-signed).
        let extra: Vec<SignedEvent> = batch
            .iter()
            .filter_map(|c| match c {
                Change::Op(op) if op.resource == DEVICES_LOG => match op.fields.get(EVENT_COLUMN) {
                    Some(crate::value::Value::Text(t)) => SignedEvent::from_text(t).ok(),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let membership = self.members.with(&extra);
        let check_members = !membership.accepts_all();
        let proven_devices: HashMap<Uuid, Uuid> = checked
            .as_ref()
            .map(|c| {
                c.chain
                    .keys
                    .iter()
                    .filter_map(|k| k.device().ok().map(|d| (k.author(), d)))
                    .collect()
            })
            .unwrap_or_default();
        // Per batch not complete here, the next group a page may start at.
        let mut progress: HashMap<(Uuid, u64), u32> = HashMap::new();
        let mut tx = self.writer.begin().await?;
        // The version vector and the batch's complete ops so far: a second copy of an op
        // is a duplicate. An author's ops mostly come in order, which only moves its
        // contiguous seq.
        let mut seen = tx.vv().clone();
        let mut candidates = Vec::with_capacity(batch.len());
        let mut unknowns: HashMap<OpId, Unknown<crate::op::Op>> = HashMap::new();
        for (change, rows_checked) in batch.into_iter().zip(rows_checked) {
            let op = change.op();
            let id = op.id();
            // This replica's own ops come back from peers that pulled them (a page asked
            // for with an older version vector): duplicates. One it never wrote is forged.
            if op.author == self.own_author && tx.vv().has(id) {
                report.duplicates += 1;
                continue;
            }
            if op.author == self.own_author {
                report.rejected.push((
                    id,
                    Rejection::new(
                        RejectReason::OwnAuthor,
                        format!("op {id} names this replica's own author, which never wrote it"),
                    ),
                ));
                continue;
            }
            if let Some(checked) = &checked
                && !checked.proven.contains(&(id.author, id.seq))
            {
                let rejection = match checked.failed.get(&(id.author, id.seq)) {
                    Some(e) => Rejection::new(RejectReason::BadProof, format!("op {id}: {e}")),
                    None => Rejection::new(
                        RejectReason::Unproven,
                        format!("op {id} came with no proof of its author"),
                    ),
                };
                report.rejected.push((id, rejection));
                continue;
            }
            // A removed device's events still count by the fold's rules (two devices that
            // remove each other at once are both removed), so they travel.
            if check_members && !(op.resource == DEVICES_LOG && op.method == Method::SharedCreate) {
                let device = proven_devices
                    .get(&id.author)
                    .copied()
                    .or_else(|| self.writer.read(|r| r.devices.get(&id.author).copied()));
                let kind = self
                    .registry
                    .get(&op.resource)
                    .map(|d| d.kind)
                    .unwrap_or(crate::registry::Kind::Shared);
                let standing = device.map(|d| (d, membership.accepts(&d, op.time, kind)));
                match standing {
                    Some((d, Standing::NotMember)) => {
                        report.rejected.push((
                            id,
                            Rejection::new(
                                RejectReason::NotMember,
                                format!("op {id}: device {d} is not a member of the library"),
                            ),
                        ));
                        continue;
                    }
                    Some((d, Standing::Removed(r))) => {
                        report.rejected.push((
                            id,
                            Rejection::new(
                                RejectReason::Removed,
                                format!(
                                    "op {id}: device {d} was removed by {} before it was stamped",
                                    r.by
                                ),
                            ),
                        ));
                        continue;
                    }
                    _ => {}
                }
            }
            if let Some(Err(e)) = &rows_checked {
                report.rejected.push((
                    id,
                    Rejection::new(RejectReason::BadProof, format!("op {id}: {e}")),
                ));
                continue;
            }
            if op.resource == DEVICES_LOG
                && let Err(why) = crate::members::check_event_op(op)
            {
                report.rejected.push((
                    id,
                    Rejection::new(RejectReason::Malformed, format!("op {id}: {why}")),
                ));
                continue;
            }
            // An op of a resource or field this registry does not know is kept (and logged:
            // it counts as received); only its known part, if any, is merged.
            let unknown = match &change {
                Change::Op(op) => match split_unknown_op(self.registry, op) {
                    Ok(u) => u,
                    Err(rejection) => {
                        report.rejected.push((id, rejection));
                        continue;
                    }
                },
                Change::OwnedRows { .. } => match validate_change(self.registry, &change) {
                    Ok(()) => None,
                    Err(rejection) => {
                        report.rejected.push((id, rejection));
                        continue;
                    }
                },
            };
            let complete = matches!(change, Change::Op(_) | Change::OwnedRows { last: true, .. });
            if tx.vv().has(id) || (complete && !first_copy(&mut seen, id)) {
                report.duplicates += 1;
                continue;
            }
            if let Change::Op(op) = &change
                && op.method == Method::OwnedBatchCreate
            {
                report.needs_rows.push(op.clone());
                continue;
            }
            // A page of rows may repeat groups, never skip one: the batch counts as applied
            // with its last page, so every group before it must have been applied.
            if let (
                Some(Ok(spanned)),
                Change::OwnedRows {
                    first_group, last, ..
                },
            ) = (&rows_checked, &change)
            {
                let key = (id.author, id.seq);
                let next = match progress.get(&key) {
                    Some(n) => *n,
                    None => batches::progress(tx.conn(), id.author, id.seq).await?,
                };
                if *first_group > next {
                    report.rejected.push((
                        id,
                        Rejection::new(
                            RejectReason::BadProof,
                            format!(
                                "op {id}: a page of rows from group {first_group}, \
                                 but only the groups before {next} are applied here"
                            ),
                        ),
                    ));
                    continue;
                }
                let reached = (*first_group).saturating_add(*spanned as u32).max(next);
                progress.insert(key, if *last { u32::MAX } else { reached });
            }
            if let Some(u) = unknown {
                unknowns.insert(id, u);
            }
            candidates.push(change);
        }
        // The clock takes the batch's latest timestamp first: when it is within the drift
        // bound, so is every other, and the clock is then past all of them (one lock and
        // one read of the system clock, not one per op). Otherwise each is checked.
        let latest = candidates.iter().map(|c| c.op().ts()).max();
        let accepted = if latest.is_none_or(|ts| self.clock.observe(ts).is_ok()) {
            candidates
        } else {
            let mut accepted = Vec::with_capacity(candidates.len());
            for change in candidates {
                let op = change.op();
                match self.clock.observe(op.ts()) {
                    Ok(()) => accepted.push(change),
                    Err(e) => report
                        .rejected
                        .push((op.id(), Rejection::new(RejectReason::Drift, e.to_string()))),
                }
            }
            accepted
        };
        if accepted.is_empty() {
            // Nothing to write: end the transaction, and count what was refused.
            drop(tx);
            self.writer.report(|| report.commit(origin)).await;
            return Ok(report);
        }
        for change in &accepted {
            if let Change::OwnedRows { header, .. } = change
                && let Some(next) = progress.get(&(header.author, header.seq))
            {
                let next = (*next != u32::MAX).then_some(*next);
                batches::set_progress(tx.conn(), header.author, header.seq, next).await?;
            }
        }
        let (conn, vv) = tx.parts();
        let mode = Mode::Remote {
            unborn: self.unborn,
        };
        let mut chain = checked.map(|c| c.chain).unwrap_or_default();
        // Keys already recorded need no statement.
        self.writer.read(|r| {
            chain.keys.retain(|k| !r.devices.contains_key(&k.author()));
        });
        // Only owned rows need authors' devices (their owners).
        let owned = accepted.iter().any(|c| {
            matches!(
                c.op().method,
                Method::OwnedBatchCreate | Method::OwnedDelete
            )
        });
        if owned {
            chain.devices = self.writer.read(|r| r.devices.clone());
        }
        for key in &chain.keys {
            if let Ok(device) = key.device() {
                chain.devices.insert(key.author(), device);
            }
        }
        let mut instead = engine::Instead::new();
        let mut kept = Vec::new();
        for change in &accepted {
            let op = change.op();
            if let Some(u) = unknowns.remove(&op.id()) {
                instead.insert(op.id(), u.known.map(Change::Op));
                report.kept.push((op.id(), u.reason.clone()));
                kept.push((Kept::Op(op.clone()), u.reason));
            }
        }
        let res = engine::apply_keeping(conn, self.registry, &accepted, &instead, mode, vv, &chain)
            .await?;
        quarantine::keep(conn, &kept).await?;
        for key in &chain.keys {
            if let Ok(device) = key.device() {
                tx.learn(key.author(), device);
            }
        }
        // Kept ops are logged (received), not applied.
        report.applied = res.logged.len().saturating_sub(report.kept.len());
        report.rows = res.rows;
        report.events = res.events;
        report.in_place = res.in_place;
        report.rejected.extend(res.rejected);
        tx.commit(|| report.commit(origin)).await?;
        Ok(report)
    }

    /// Merges a page of snapshot rows, register by register, in one transaction. A row
    /// with a register more than `max_drift` ahead is set aside (not imported, counted in
    /// the result with the authors the snapshot then must not cover); the others are
    /// imported.
    ///
    /// `progress`: `Some(next)` records, in the same transaction, that the snapshot under
    /// way ([`crate::sql::snapshots`]) continues after `next` (`None`: this was its last
    /// page) and may not claim the authors of the rows set aside.
    pub(crate) async fn import_snapshot_page(
        &self,
        rows: Vec<SnapshotRow>,
        progress: Option<Option<&SnapshotPosition>>,
    ) -> Result<SnapshotImport, StoreError> {
        let mut result = SnapshotImport::default();
        let mut accepted = Vec::with_capacity(rows.len());
        let mut kept = Vec::new();
        // A snapshot page is rewritten as changes the engine already knows how to merge.
        for r in rows {
            let unknown = split_unknown_row(self.registry, &r).map_err(|r| StoreError::Decode {
                what: "snapshot row",
                reason: r.detail,
            })?;
            // Registers from a snapshot are checked for drift like the ops they stand for:
            // one far in the future would otherwise win every merge for good.
            let timestamps = r.timestamps();
            match timestamps.iter().find_map(|ts| self.clock.check(*ts).err()) {
                None => match unknown {
                    None => accepted.push(r),
                    // Kept whole, for a build that knows it; its known part merged now.
                    Some(u) => {
                        accepted.extend(u.known);
                        kept.push((Kept::Row(r), u.reason));
                    }
                },
                Some(e) => {
                    tracing::debug!("snapshot row set aside: {e}");
                    result.set_aside += 1;
                    result
                        .uncovered
                        .extend(timestamps.iter().map(|ts| ts.author));
                }
            }
        }
        // Every accepted timestamp is within the bound: the clock moves past the latest.
        if let Some(latest) = accepted.iter().flat_map(|r| r.timestamps()).max() {
            self.clock.observe(latest)?;
        }
        let mut tx = self.writer.begin().await?;
        let devices = tx.devices();
        // The owned rows of a device removed with `forget_data` are deleted everywhere; a
        // peer that has not heard of it yet may still send them.
        let forgotten: std::collections::HashSet<Uuid> = self.members.folded.forgotten().collect();
        if !forgotten.is_empty() {
            accepted.retain(|r| match r {
                SnapshotRow::Owned { ts, .. } | SnapshotRow::OwnedTombstone { ts, .. } => devices
                    .get(&ts.author)
                    .is_none_or(|d| !forgotten.contains(d)),
                SnapshotRow::Shared { .. } => true,
            });
        }
        let n = accepted.len();
        engine::import_rows(tx.conn(), self.registry, accepted, &devices).await?;
        quarantine::keep(tx.conn(), &kept).await?;
        if let Some(next) = progress {
            snapshots::record_page(tx.conn(), next, n as u64, &result.uncovered).await?;
        }
        result.kept = kept.len();
        tx.commit(|| Commit {
            imported: n,
            ..Commit::new(Origin::Snapshot)
        })
        .await?;
        result.imported = n;
        Ok(result)
    }

    /// Learns the authors a snapshot's proofs prove (their keys, so their devices), before
    /// its rows are imported: an owned row belongs to its author's device. Moves no version
    /// vector. Returns the proofs refused, with why.
    ///
    /// `start`: `Some((source, schema))` also records a new snapshot import under way
    /// ([`crate::sql::snapshots`]), served by `source` from a registry of `schema`, that may
    /// claim the proofs that verify; `None` records nothing (a resumed import).
    pub(crate) async fn learn_authors(
        &self,
        proofs: &[Proof],
        start: Option<(&str, Option<&SchemaVersion>)>,
    ) -> Result<Vec<(Uuid, Rejection)>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let (refused, verified) = learn_in(&mut tx, proofs).await?;
        if let Some((source, schema)) = start {
            snapshots::start(tx.conn(), source, schema, &verified).await?;
            // Tables the snapshot fills from empty grow at their end: their other keys are
            // built once the rows are in (`build_deferred`).
            let left_out = deferred::defer_empty(tx.conn(), self.registry).await?;
            if !left_out.is_empty() {
                tracing::info!(
                    left_out = %left_out.join(", "),
                    "snapshot into empty tables: their indexes are built after its rows"
                );
            }
        }
        tx.commit_quietly().await?;
        Ok(refused)
    }

    /// Builds what a snapshot import left out ([`crate::sql::deferred`]): each index in a
    /// transaction of its own, on a connection whose sorts spill to temporary files (one of
    /// `temp_store = MEMORY` keeps a sort wholly in memory, as large as the index), then
    /// `files`, a range of cas_ids per transaction. Returns how many indexes it built.
    pub(crate) async fn build_deferred(&self) -> Result<usize, StoreError> {
        // The usual case (every open, every snapshot into tables that held rows): nothing
        // is left out, and one read says so without a write turn.
        if !deferred::any(&mut *self.writer.read_conn().await?).await? {
            return Ok(0);
        }
        let mut built = 0;
        loop {
            let mut turn = self.writer.own_turn().await?;
            let conn = turn.conn();
            let Some(d) = deferred::indexes(conn).await?.into_iter().next() else {
                break;
            };
            let t = std::time::Instant::now();
            for sql in ["PRAGMA temp_store = FILE", "BEGIN IMMEDIATE"] {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            deferred::build_index(conn, &d).await?;
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            turn.done();
            tracing::info!(
                index = %d.name,
                table = %d.table,
                ms = t.elapsed().as_millis() as u64,
                "index built after the snapshot's rows"
            );
            built += 1;
        }
        let t = std::time::Instant::now();
        let mut ranges = 0u64;
        loop {
            let mut tx = self.writer.begin().await?;
            let Some(after) = deferred::files_after(tx.conn()).await? else {
                tx.commit_quietly().await?;
                break;
            };
            let last =
                deferred::rebuild_files_range(tx.conn(), after.as_deref(), deferred::FILES_PER_TX)
                    .await?;
            tx.commit_quietly().await?;
            ranges += 1;
            if last {
                tracing::info!(
                    ranges,
                    ms = t.elapsed().as_millis() as u64,
                    "files rebuilt after the snapshot's rows"
                );
                break;
            }
        }
        Ok(built)
    }

    /// Continues the snapshot import under way, now served by `source` from a state whose
    /// proofs are `now`, from after `next`: learns `now`'s authors, and from here on the
    /// import may claim, per author, the lower of what it stored and what `now` proves
    /// ([`crate::page::resumed_proofs`]). Returns the progress as it now is (None: no
    /// import under way) and the proofs of `now` refused.
    pub(crate) async fn resume_snapshot(
        &self,
        source: &str,
        next: Option<&SnapshotPosition>,
        now: &[Proof],
    ) -> Result<(Option<SnapshotProgress>, Vec<(Uuid, Rejection)>), StoreError> {
        let mut tx = self.writer.begin().await?;
        let (refused, verified) = learn_in(&mut tx, now).await?;
        let Some(mut progress) = snapshots::load(tx.conn()).await? else {
            tx.commit_quietly().await?;
            return Ok((None, refused));
        };
        progress.proofs = resumed_proofs(&progress.proofs, &verified);
        snapshots::resume(tx.conn(), source, next, &progress.proofs).await?;
        tx.commit_quietly().await?;
        progress.source = source.to_owned();
        progress.next = next.cloned();
        progress.resumed += 1;
        Ok((Some(progress), refused))
    }
}

/// Verifies a snapshot's `proofs` (each of an empty run) and learns their authors' keys in
/// `tx`. Returns those refused, with why, and those that verify.
async fn learn_in(
    tx: &mut WriteTx<'_>,
    proofs: &[Proof],
) -> Result<(Vec<(Uuid, Rejection)>, Vec<Proof>), StoreError> {
    let mut refused = Vec::new();
    let mut verified = Vec::new();
    let mut chain = Chain::default();
    for p in proofs {
        match p.verify(std::iter::empty()) {
            Ok(v) if p.len == 0 => {
                chain.keys.push(p.key);
                tx.learn(v.author, v.device);
                verified.push(p.clone());
            }
            Ok(v) => refused.push((
                v.author,
                Rejection::new(
                    RejectReason::Malformed,
                    "a snapshot's proof must cover no ops".into(),
                ),
            )),
            Err(e) => refused.push((
                p.key.author(),
                Rejection::new(RejectReason::BadProof, format!("snapshot proof: {e}")),
            )),
        }
    }
    oplog::store_proven(tx.conn(), &chain).await?;
    Ok((refused, verified))
}

impl Remote<'_> {
    /// Ends a snapshot import. The snapshot's rows hold the effect of every op its proofs
    /// cover: each proof (of an empty run) shows that its author's log reached
    /// `first - 1`, signed by the author. Only a verified proof moves this replica's version
    /// vector (to that seq, never beyond), and the log counts as pruned there, with the
    /// chain hash the proof gives, so that later runs of that author can be proven. Returns
    /// the proofs refused, with why; the authors they name stay where they were (their
    /// ops come by catch-up).
    pub(crate) async fn finish_snapshot(
        &self,
        proofs: &[Proof],
    ) -> Result<Vec<(Uuid, Rejection)>, StoreError> {
        let mut refused = Vec::new();
        let mut proven = Vec::new();
        for p in proofs {
            let author = p.key.author();
            if author == self.own_author {
                refused.push((
                    author,
                    Rejection::new(
                        RejectReason::OwnAuthor,
                        "a snapshot claims this replica's own author".into(),
                    ),
                ));
                continue;
            }
            if p.len != 0 {
                refused.push((
                    author,
                    Rejection::new(
                        RejectReason::Malformed,
                        "a snapshot's proof must cover no ops".into(),
                    ),
                ));
                continue;
            }
            match p.verify(std::iter::empty()) {
                Ok(v) => proven.push((p, v)),
                Err(e) => refused.push((
                    author,
                    Rejection::new(RejectReason::BadProof, format!("snapshot of {author}: {e}")),
                )),
            }
        }
        let mut tx = self.writer.begin().await?;
        let mut chain = Chain::default();
        let mut moved = Vec::new();
        for (p, v) in &proven {
            let seq = p.first - 1;
            chain.heads.push(crate::proof::Head {
                author: v.author,
                seq: v.head.0,
                hash: v.head.1,
                sig: p.sig,
                tail: p.tail.clone(),
            });
            chain.keys.push(p.key);
            tx.learn(v.author, v.device);
            if seq > tx.vv().contiguous(&v.author) {
                moved.push((v.author, seq, p.prev));
            }
        }
        let (conn, vv) = tx.parts();
        for (author, seq, _) in &moved {
            vv.authors.entry(*author).or_default().raise(*seq);
        }
        versions::persist_vv(conn, vv, moved.iter().map(|(a, _, _)| *a)).await?;
        for (author, seq, prev) in &moved {
            versions::record_pruned_chain(conn, *author, *seq, prev).await?;
            batches::prune(conn, *author, *seq).await?;
        }
        oplog::store_proven(conn, &chain).await?;
        // The import under way is over, in the transaction that ends it.
        snapshots::clear(conn).await?;
        let (_, horizon) = tx.horizon_mut();
        for (author, seq, _) in &moved {
            let h = horizon.entry(*author).or_default();
            *h = (*h).max(*seq);
        }
        tx.commit(|| Commit::new(Origin::Snapshot)).await?;
        Ok(refused)
    }

    /// Applies what was kept for a build that knows it (see [`crate::sql::quarantine`]), now
    /// that this registry does: each kept op through the engine (it is in the log already,
    /// and last-writer-wins registers make a late merge the same as an early one), each
    /// kept snapshot row as a snapshot row; then forgets them. What this registry does not
    /// know either stays. Returns how many were applied.
    pub(crate) async fn apply_kept(&self) -> Result<usize, StoreError> {
        const PAGE: usize = 512;
        let mut after = 0;
        let mut applied = 0;
        loop {
            let mut tx = self.writer.begin().await?;
            let page = quarantine::page(tx.conn(), after, PAGE).await?;
            let Some((last, _)) = page.last() else {
                return Ok(applied);
            };
            after = *last;
            let (mut ops, mut rows, mut ids) = (Vec::new(), Vec::new(), Vec::new());
            for (id, item) in page {
                match item {
                    Kept::Op(op) if validate_op(self.registry, &op).is_ok() => {
                        ops.push(Change::Op(op));
                        ids.push(id);
                    }
                    Kept::Row(row) if validate_snapshot_row(self.registry, &row).is_ok() => {
                        rows.push(row);
                        ids.push(id);
                    }
                    _ => {}
                }
            }
            if ids.is_empty() {
                continue;
            }
            let mut chain = Chain::default();
            chain.devices = tx.devices();
            let mode = Mode::Remote {
                unborn: self.unborn,
            };
            let res = engine::apply_logged(tx.conn(), self.registry, &ops, mode, &chain).await?;
            let devices = tx.devices();
            let n = rows.len();
            engine::import_rows(tx.conn(), self.registry, rows, &devices).await?;
            quarantine::remove(tx.conn(), &ids).await?;
            applied += ids.len();
            tx.commit(|| Commit {
                events: res.events.clone(),
                applied: ops.len(),
                imported: n,
                ..Commit::new(Origin::CatchUp)
            })
            .await?;
        }
    }

    /// Removes from the log every op covered by `horizon` (per author, a seq) and not above
    /// this replica's own contiguous seq, and records the new horizon. Returns how many ops
    /// were removed. Merges are unaffected: the registers live beside the data.
    pub(crate) async fn prune(&self, horizon: &BTreeMap<Uuid, u64>) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let vv = tx.vv().clone();
        let (conn, current) = tx.horizon_mut();
        let mut removed = 0;
        for (author, h) in horizon {
            let contiguous = vv.contiguous(author);
            let h = (*h).min(contiguous);
            let pruned = current.get(author).copied().unwrap_or(0);
            if h == 0 || pruned >= h {
                continue;
            }
            removed += oplog::prune(conn, *author, pruned, h).await?;
            versions::record_pruned(conn, *author, contiguous, h).await?;
            current.insert(*author, h);
        }
        tx.commit(|| Commit {
            pruned: removed,
            ..Commit::new(Origin::Prune)
        })
        .await?;
        Ok(removed)
    }
}

impl ApplyReport {
    /// The commit of this batch, for the commit feed.
    fn commit(&self, origin: Origin) -> Commit {
        Commit {
            events: self.events.clone(),
            applied: self.applied,
            rows: self.rows,
            duplicates: self.duplicates,
            rejected: self.rejected.clone(),
            ..Commit::new(origin)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
