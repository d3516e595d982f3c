//! What a peer is sent: the ops it lacks (paged, owned batches expanded into their rows page
//! by page) and state snapshots in pages. Reads only,
//! through the store's public accessors; what peers send is written by `remote`.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::clock::Hlc;
use crate::error::StoreError;
use crate::merge::SharedRow;
use crate::op::{Change, Method, Op, OwnedRow, SnapshotRow, VersionVector};
use crate::page::{AuthorRange, KEPT_PHASE, OpsCursor, OpsPage, SnapshotPosition};
use crate::proof::{Hash, Proof, TAIL_CAP, op_hash};
use crate::registry::{Kind, ResourceDef};
use crate::sql::quarantine::{self, Kept};
use crate::sql::rows::{
    column_list, count_others_of_batch, key_of, live_row_from, others_of_batch, owned_row_from,
    parse_uuid, side_head_from, side_prop_from,
};
use crate::sql::{batches, oplog};
use crate::store::Store;

/// The largest page a caller may ask for (ops plus rows).
pub const MAX_PAGE: usize = 20_000;

/// The most bytes of one page of ops or of a snapshot, by the items' `wire_size` estimates
/// (upper bounds of their CBOR). Half the 16 MiB response frame: the other half is room
/// for the rest of a response (the server's version vector) and for the one item a page
/// always holds whatever its size (a row is at most [`crate::value::MAX_ROW_BYTES`]), so
/// every page fits in one frame and no request is refused for its answer's size.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

impl Store {
    /// A page of the ops a peer with version vector `theirs` lacks, including other
    /// authors' ops, in (author, seq) order, at most `limit` items (ops plus owned rows)
    /// and [`MAX_PAGE_BYTES`] (but at least one item, whatever its size).
    /// An `OwnedBatchCreate` is expanded into its rows, page by page, read from the owned
    /// table. Start with `OpsCursor::default()` and pass `next` back until it is `None`.
    /// Each run of consecutive ops of one author in the page comes with its proof
    /// ([`crate::proof`]).
    pub async fn ops_since(
        &self,
        theirs: &VersionVector,
        cursor: &OpsCursor,
        limit: usize,
    ) -> Result<OpsPage, StoreError> {
        self.ops_since_in(theirs, &AuthorRange::ALL, cursor, limit)
            .await
    }

    /// [`Store::ops_since`] for the authors of `range` only (`theirs` need hold no other).
    pub async fn ops_since_in(
        &self,
        theirs: &VersionVector,
        range: &AuthorRange,
        cursor: &OpsCursor,
        limit: usize,
    ) -> Result<OpsPage, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let mut page = self
            .ops_page(&mut conn, theirs, range, cursor, limit)
            .await?;
        page.proofs = prove_page(&mut conn, &page.changes).await?;
        Ok(page)
    }

    /// Proofs that this replica's log reached each author's contiguous seq: what a
    /// snapshot's receiver may raise its version vector with. Authors it cannot prove (no
    /// key or no head here: ops of a version before proofs) are left out.
    pub async fn snapshot_proofs(&self) -> Result<Vec<Proof>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (proofs, next) = self.snapshot_proofs_page(after, usize::MAX).await?;
            out.extend(proofs);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// A page of [`Store::snapshot_proofs`]: the proofs of the authors after `after` (None:
    /// from the first), at most `max_bytes` of them by [`Proof::wire_size`] (at least one),
    /// and the last author of the page when more follow. A snapshot's receiver fetches
    /// every page before the first page of rows, so the rows it reads hold the effect of
    /// every op the proofs cover.
    pub async fn snapshot_proofs_page(
        &self,
        after: Option<Uuid>,
        max_bytes: usize,
    ) -> Result<(Vec<Proof>, Option<Uuid>), StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mine = self.version_vector();
        let mut conn = self.pool().acquire().await?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let from = after.map_or(Unbounded, Excluded);
        for (author, v) in mine.authors.range((from, Unbounded)) {
            if v.contiguous == 0 {
                continue;
            }
            if let Some(p) = prove_run(&mut conn, *author, v.contiguous + 1, &[]).await? {
                let size = p.wire_size();
                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                    let last = out.last().map(|p: &Proof| p.key.author());
                    return Ok((out, last));
                }
                bytes = bytes.saturating_add(size);
                out.push(p);
            }
        }
        Ok((out, None))
    }

    async fn ops_page(
        &self,
        conn: &mut SqliteConnection,
        theirs: &VersionVector,
        range: &AuthorRange,
        cursor: &OpsCursor,
        limit: usize,
    ) -> Result<OpsPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mine = self.version_vector();
        let mut page = OpsPage::default();
        let mut budget = limit;
        // Bytes left for the page's changes and proofs.
        let mut bytes_left = MAX_PAGE_BYTES;
        let mut runs = RunCost::default();
        let start_author = cursor.position.map(|(a, _)| a);
        let start = start_author.unwrap_or(Uuid::nil()).max(range.from);
        for (author, have) in mine.authors.range(start..) {
            if !range.contains(author) {
                break;
            }
            let their = theirs.authors.get(author).cloned().unwrap_or_default();
            let mut after = their.contiguous;
            let mut row_after = None;
            if let Some((a, s)) = cursor.position
                && a == *author
            {
                after = after.max(s);
                row_after = cursor.row_after;
            }
            if have.max() <= after {
                continue;
            }
            loop {
                if budget == 0 {
                    page.next = Some(OpsCursor {
                        position: Some((*author, after)),
                        row_after: None,
                    });
                    return Ok(page);
                }
                let upto = after.saturating_add(budget as u64);
                let ops = oplog::chunks_after(conn, *author, after, upto, bytes_left).await?;
                if ops.is_empty() {
                    break;
                }
                for (op, _) in ops {
                    let seq = op.seq;
                    if their.has(seq) {
                        after = seq;
                        continue;
                    }
                    let (reserve, refund) = runs.cost(conn, op.author, seq).await?;
                    if op.method == Method::OwnedBatchCreate {
                        let start = match row_after.take() {
                            Some((seq, u)) if seq == op.seq => Some(u),
                            _ => None,
                        };
                        let before = page.changes.len();
                        let (done, last_uuid) = self
                            .expand_batch(
                                conn,
                                &op,
                                start,
                                PageBudget {
                                    items: &mut budget,
                                    bytes: &mut bytes_left,
                                    proof: (reserve, refund),
                                },
                                &mut page,
                            )
                            .await?;
                        if page.changes.len() > before {
                            runs.enter(op.author, seq);
                        }
                        if !done {
                            page.next = Some(OpsCursor {
                                position: Some((*author, after)),
                                row_after: last_uuid
                                    .map(|u| (op.seq, u))
                                    .or(start.map(|u| (op.seq, u))),
                            });
                            return Ok(page);
                        }
                    } else {
                        let change = Change::Op(op);
                        let size = change.wire_size() + reserve;
                        let available = bytes_left.saturating_add(refund);
                        if size > available && !page.changes.is_empty() {
                            page.next = Some(OpsCursor {
                                position: Some((*author, after)),
                                row_after: None,
                            });
                            return Ok(page);
                        }
                        bytes_left = available.saturating_sub(size);
                        runs.enter(*author, seq);
                        page.changes.push(change);
                        budget -= 1;
                    }
                    after = seq;
                    if budget == 0 {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    /// Appends rows of an owned batch to `page`: whole groups of its header's
    /// [`Op::groups`], each row with the values the batch wrote, as many groups as the items
    /// and bytes left in `budget` hold (the bytes count the proof of a run the batch opens),
    /// and at least one when the page is empty. Groups are read one at a time, so no more
    /// than one group beyond what the page takes is ever read. A batch whose header has no
    /// groups (written before rows were committed to) is cut by items alone; a receiver
    /// that checks proofs refuses its rows. Returns whether the batch ended, and the last
    /// row UUID sent.
    async fn expand_batch(
        &self,
        conn: &mut SqliteConnection,
        op: &Op,
        start: Option<Uuid>,
        budget: PageBudget<'_>,
        page: &mut OpsPage,
    ) -> Result<(bool, Option<Uuid>), StoreError> {
        let PageBudget {
            items,
            bytes: bytes_left,
            proof,
        } = budget;
        let def = self.registry().get(&op.resource)?;
        let device = self.device_of(&op.author).unwrap_or(op.author);
        let (reserve, refund) = proof;
        let header = Change::OwnedRows {
            header: op.clone(),
            rows: Vec::new(),
            last: true,
            first_group: 0,
        }
        .wire_size()
            + reserve;
        let mut available = bytes_left.saturating_add(refund);
        if !page.changes.is_empty() && header > available {
            // Not even the header fits: the batch starts on the next page.
            return Ok((false, None));
        }
        available = available.saturating_sub(header);
        let (rows, first_group, done) = if op.groups.is_empty() {
            let want = (*items).max(1);
            let mut rows = batch_rows(conn, def, op, device, start, want + 1).await?;
            let done = rows.len() <= want;
            rows.truncate(want);
            let used: usize = rows.iter().map(OwnedRow::wire_size).sum();
            available = available.saturating_sub(used);
            (rows, 0, done)
        } else {
            // The group the cursor ends: the rows of the batch up to it, counted.
            let before = match start {
                Some(u) => count_batch_rows(conn, def, op, device, u).await?,
                None => 0,
            };
            let groups = &op.groups;
            let (mut first, mut at) = (0, 0u64);
            while first < groups.len() && at < before {
                at += u64::from(groups[first].rows);
                first += 1;
            }
            let (mut end, mut rows, mut after) = (first, Vec::new(), start);
            while end < groups.len() {
                let n = groups[end].rows as usize;
                if end > first && rows.len() + n > *items {
                    break;
                }
                let group = batch_rows(conn, def, op, device, after, n).await?;
                let size: usize = group.iter().map(OwnedRow::wire_size).sum();
                if size > available && (end > first || !page.changes.is_empty()) {
                    break;
                }
                available = available.saturating_sub(size);
                after = group.last().map(|r| r.uuid).or(after);
                rows.extend(group);
                end += 1;
            }
            if end == first {
                // Not one more group fits in this page: the batch continues on the next.
                return Ok((false, None));
            }
            (rows, first as u32, end == groups.len())
        };
        *bytes_left = available;
        let last_uuid = rows.last().map(|r| r.uuid);
        *items = items.saturating_sub(rows.len().max(1));
        page.changes.push(Change::OwnedRows {
            header: op.clone(),
            rows,
            last: done,
            first_group,
        });
        Ok((done, last_uuid))
    }

    // -----------------------------------------------------------------------------------
    // Snapshots

    /// A page of the state snapshot after `position` (None: from the start), at most
    /// `limit` rows and [`MAX_PAGE_BYTES`] (but at least one row, whatever its size). A
    /// snapshot is exact for the version vector read before its first page (pages may also
    /// hold later changes, which merge harmlessly).
    pub async fn snapshot_page(
        &self,
        position: Option<&SnapshotPosition>,
        limit: usize,
    ) -> Result<(Vec<SnapshotRow>, Option<SnapshotPosition>), StoreError> {
        self.snapshot_page_within(position, limit, MAX_PAGE_BYTES)
            .await
    }

    /// [`Store::snapshot_page`] with at most `max_bytes` of rows (at most
    /// [`MAX_PAGE_BYTES`]; at least one row): the first page leaves room for the
    /// snapshot's proofs ([`Store::snapshot_proofs`], counted by [`Proof::wire_size`]).
    pub async fn snapshot_page_within(
        &self,
        position: Option<&SnapshotPosition>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<SnapshotRow>, Option<SnapshotPosition>), StoreError> {
        let mut conn = self.pool().acquire().await?;
        let max_bytes = max_bytes.min(MAX_PAGE_BYTES);
        if let Some(p) = position
            && p.phase == KEPT_PHASE
        {
            let after = p
                .after
                .map_or(0, |u| u.as_u128().min(i64::MAX as u128) as i64);
            return kept_page(&mut conn, after, limit, max_bytes).await;
        }
        let (rows, next) = self
            .snapshot_page_on(&mut conn, position, limit, max_bytes)
            .await?;
        if next.is_some() || quarantine::page(&mut conn, 0, 1).await?.is_empty() {
            return Ok((rows, next));
        }
        // The registry's rows are done: what this node keeps for a newer schema follows.
        Ok((
            rows,
            Some(SnapshotPosition {
                resource: String::new(),
                phase: KEPT_PHASE,
                after: None,
            }),
        ))
    }

    async fn snapshot_page_on(
        &self,
        conn: &mut SqliteConnection,
        position: Option<&SnapshotPosition>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<SnapshotRow>, Option<SnapshotPosition>), StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let reg = &self.registry();
        let mut pos = match position {
            Some(p) => {
                reg.get(&p.resource)?;
                p.clone()
            }
            None => match reg.next_after(None) {
                Some(d) => SnapshotPosition {
                    resource: d.name.clone(),
                    phase: 0,
                    after: None,
                },
                None => return Ok((Vec::new(), None)),
            },
        };
        let mut out = Vec::new();
        let mut bytes_left = max_bytes;
        loop {
            let def = reg.get(&pos.resource)?;
            let budget = Budget {
                rows: limit - out.len(),
                bytes: bytes_left,
                force_one: out.is_empty(),
            };
            let (got, full) = match (def.kind, pos.phase) {
                (Kind::Shared, _) => read_shared_rows(conn, def, pos.after, budget).await?,
                (Kind::Owned, 0) => read_owned_rows(conn, def, pos.after, budget).await?,
                (Kind::Owned, _) => read_owned_tombstones(conn, def, pos.after, budget).await?,
            };
            if let Some(last) = got.last() {
                pos.after = Some(snapshot_uuid(last));
            }
            let used: usize = got.iter().map(SnapshotRow::wire_size).sum();
            bytes_left = bytes_left.saturating_sub(used);
            out.extend(got);
            if full {
                return Ok((out, Some(pos)));
            }
            // This resource (or phase) is done: move on.
            if def.kind == Kind::Owned && pos.phase == 0 {
                pos.phase = 1;
                pos.after = None;
                continue;
            }
            match reg.next_after(Some(&pos.resource)) {
                Some(d) => {
                    pos = SnapshotPosition {
                        resource: d.name.clone(),
                        phase: 0,
                        after: None,
                    }
                }
                None => return Ok((out, None)),
            }
        }
    }
}

/// A page of the snapshot's last phase: what this node keeps (see
/// [`crate::sql::quarantine`]) after the item `after`, as snapshot rows (a kept op as the
/// registers it sets), at most `limit` and `max_bytes` (at least one).
async fn kept_page(
    conn: &mut SqliteConnection,
    after: i64,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<SnapshotRow>, Option<SnapshotPosition>), StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let items = quarantine::page(conn, after, limit + 1).await?;
    let more = items.len() > limit;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last = after;
    for (id, item) in items.into_iter().take(limit) {
        let row = match item {
            Kept::Row(r) => Some(r),
            Kept::Op(op) => kept_op_row(&op),
        };
        if let Some(r) = row {
            let size = r.wire_size();
            if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                return Ok((out, Some(kept_position(last))));
            }
            bytes = bytes.saturating_add(size);
            out.push(r);
        }
        last = id;
    }
    Ok((out, more.then(|| kept_position(last))))
}

fn kept_position(id: i64) -> SnapshotPosition {
    SnapshotPosition {
        resource: String::new(),
        phase: KEPT_PHASE,
        after: Some(Uuid::from_u128(id.max(0) as u128)),
    }
}

/// The registers a kept op sets, as a snapshot row (merged as the op would be).
fn kept_op_row(op: &Op) -> Option<SnapshotRow> {
    let ts = op.ts();
    let uuid = op.uuid?;
    let shared = |exists_ts, alive, props| SnapshotRow::Shared {
        resource: op.resource.clone(),
        uuid,
        exists_ts,
        alive,
        props,
    };
    Some(match op.method {
        Method::SharedCreate => shared(
            ts,
            true,
            op.fields
                .iter()
                .map(|(k, v)| (k.clone(), ts, v.clone()))
                .collect(),
        ),
        // An update alone sets one property of a row known to exist from elsewhere.
        Method::SharedUpdate => shared(
            Hlc::default(),
            false,
            vec![(op.property.clone()?, ts, op.value.clone()?)],
        ),
        Method::SharedDelete => shared(ts, false, Vec::new()),
        Method::OwnedDelete => SnapshotRow::OwnedTombstone {
            resource: op.resource.clone(),
            uuid,
            ts,
            claim: None,
        },
        Method::OwnedBatchCreate => return None,
    })
}

/// Up to `limit` rows of the owned batch `op` of `def` after `after`, in UUID order, with
/// the values the batch wrote: the rows that still hold them (as the row of their owner
/// `device`, or as the kept op of a device that does not own them), and the rows whose
/// values were kept when a later op replaced them. A row is in one place only.
async fn batch_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    op: &Op,
    device: Uuid,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<OwnedRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let cols = column_list(def);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid{cols} FROM {} WHERE owner = ? AND crdt_seq = ? AND substr(crdt_ts, 9) = ? \
         AND uuid > ? ORDER BY uuid LIMIT ?",
        def.name
    )))
    .bind(key_of(device))
    .bind(op.seq as i64)
    .bind(op.author.as_bytes().to_vec())
    .bind(after.map(key_of).unwrap_or_default())
    .bind(limit.min(i64::MAX as usize) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(owned_row_from(r, def, 1)?);
    }
    out.extend(others_of_batch(conn, def, device, op.author, op.seq, after, limit).await?);
    out.extend(batches::originals_of_batch(conn, def, op.author, op.seq, after, limit).await?);
    out.sort_by_key(|r| r.uuid);
    out.dedup_by_key(|r| r.uuid);
    out.truncate(limit);
    Ok(out)
}

/// How many rows of the owned batch `op` of `def` [`batch_rows`] holds at or before `upto`.
async fn count_batch_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    op: &Op,
    device: Uuid,
    upto: Uuid,
) -> Result<u64, StoreError> {
    let own: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {} WHERE owner = ? AND crdt_seq = ? AND substr(crdt_ts, 9) = ? \
         AND uuid <= ?",
        def.name
    )))
    .bind(key_of(device))
    .bind(op.seq as i64)
    .bind(op.author.as_bytes().to_vec())
    .bind(key_of(upto))
    .fetch_one(&mut *conn)
    .await?;
    let others = count_others_of_batch(conn, def, device, op.author, op.seq, upto).await?;
    let kept = batches::count_originals(conn, def, op.author, op.seq, upto).await?;
    Ok(own.max(0) as u64 + others + kept)
}

/// The proofs of a page's changes: one per run of consecutive ops of one author. A run this
/// replica cannot prove (an op logged before proofs existed) goes without, and its
/// receiver refuses it.
async fn prove_page(
    conn: &mut SqliteConnection,
    changes: &[Change],
) -> Result<Vec<Proof>, StoreError> {
    let mut runs: Vec<Vec<&Op>> = Vec::new();
    for c in changes {
        let op = c.op();
        match runs.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|l| l.author == op.author && l.seq == op.seq) => {}
            Some(run)
                if run
                    .last()
                    .is_some_and(|l| l.author == op.author && l.seq + 1 == op.seq) =>
            {
                run.push(op)
            }
            _ => runs.push(vec![op]),
        }
    }
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let (author, first) = (run[0].author, run[0].seq);
        if let Some(p) = prove_run(conn, author, first, &run).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The proof of `run` (ops of `author` from `first`; empty: a proof that the log reached
/// `first - 1`), from the chain hash before it and the first head at or after its end.
async fn prove_run(
    conn: &mut SqliteConnection,
    author: Uuid,
    first: u64,
    run: &[&Op],
) -> Result<Option<Proof>, StoreError> {
    let Some(key) = oplog::author_key(conn, author).await? else {
        return Ok(None);
    };
    let Some(prev) = oplog::chain_at(conn, author, first - 1).await? else {
        return Ok(None);
    };
    let last = first + run.len() as u64 - 1;
    let Some(head) = oplog::head_from(conn, author, last.max(1)).await? else {
        return Ok(None);
    };
    // A page counts each proof's bytes by its tail's length (see [`RunCost`]); a tail
    // longer than the verifier takes would be refused anyway, so the run goes without.
    if head.seq.saturating_sub(last) > TAIL_CAP as u64 {
        return Ok(None);
    }
    // The op hashes after the run up to the head: from the log, then the head's own tail.
    let stored_from = head.seq + 1 - head.tail.len() as u64;
    let mut tail: Vec<Hash> = Vec::new();
    if last + 1 < stored_from {
        let ops = oplog::chunks_after(conn, author, last, stored_from - 1, usize::MAX).await?;
        for (op, _) in ops.iter().take_while(|(op, _)| op.seq < stored_from) {
            if op.seq != last + 1 + tail.len() as u64 {
                return Ok(None);
            }
            tail.push(op_hash(op));
        }
        if tail.len() as u64 != stored_from - last - 1 {
            return Ok(None);
        }
    }
    let skip = (last + 1).saturating_sub(stored_from) as usize;
    tail.extend(head.tail.iter().skip(skip));
    Ok(Some(Proof {
        key,
        first,
        len: run.len() as u64,
        prev,
        tail,
        sig: head.sig,
    }))
}

/// The proof bytes of a page's runs, counted while the page is built: the page carries one
/// proof per run of consecutive ops of one author ([`prove_page`]). A run reserves
/// [`Proof::MAX_WIRE_SIZE`] when it opens; once it is closed (the next run opens) its
/// proof's size is known from how far its last op is from the next signed head, and the
/// rest of the reservation is given back.
#[derive(Debug, Default)]
struct RunCost {
    /// The open run: its author and last seq.
    open: Option<(Uuid, u64)>,
}

impl RunCost {
    /// What adding an item of the op `author`#`seq` to the page costs in proof bytes: what
    /// it reserves (the bound of a run it opens) and what it gives back (what the run it
    /// closes does not use). Nothing changes until [`RunCost::enter`].
    async fn cost(
        &self,
        conn: &mut SqliteConnection,
        author: Uuid,
        seq: u64,
    ) -> Result<(usize, usize), StoreError> {
        match self.open {
            Some((a, last)) if a == author && (seq == last || seq == last + 1) => Ok((0, 0)),
            Some((a, last)) => {
                // As `prove_run` builds it: the tail runs to the first head at or after the
                // run's end; a run it cannot prove goes without a proof.
                let used = match oplog::head_seq_from(conn, a, last.max(1)).await? {
                    Some(head) if head.saturating_sub(last) <= TAIL_CAP as u64 => {
                        Proof::wire_size_for((head - last) as usize)
                    }
                    _ => 0,
                };
                Ok((
                    Proof::MAX_WIRE_SIZE,
                    Proof::MAX_WIRE_SIZE.saturating_sub(used),
                ))
            }
            None => Ok((Proof::MAX_WIRE_SIZE, 0)),
        }
    }

    /// An item of `author`#`seq` was added.
    fn enter(&mut self, author: Uuid, seq: u64) {
        self.open = Some((author, seq));
    }
}

/// What an owned batch's rows may take of a page: items, bytes, and the proof bytes its
/// header reserves and gives back ([`RunCost::cost`]).
struct PageBudget<'a> {
    items: &'a mut usize,
    bytes: &'a mut usize,
    proof: (usize, usize),
}

/// What one read of snapshot rows may take: rows, bytes, and whether it must return a
/// row even if it alone is over the bytes (the page is empty so far).
#[derive(Debug, Clone, Copy)]
struct Budget {
    rows: usize,
    bytes: usize,
    force_one: bool,
}

/// How many leading items of `sizes` fit in `room` bytes; at least one if `force_one`.
fn fit(sizes: impl Iterator<Item = usize>, room: usize, force_one: bool) -> usize {
    let mut used = 0usize;
    let mut n = 0;
    for s in sizes {
        if used.saturating_add(s) > room && !(force_one && n == 0) {
            break;
        }
        used = used.saturating_add(s);
        n += 1;
    }
    n
}

/// A SQL expression for an upper bound of the wire size of a row of `def`: `fixed`, plus
/// per column its name, a register's timestamp and a value's header, plus the value's
/// bytes, which SQLite measures without reading them (`octet_length`). It is at least
/// what `wire_size` estimates for the row read from those columns.
fn size_sql(def: &ResourceDef, fixed: usize) -> String {
    size_sql_of(def, fixed, "")
}

/// [`size_sql`] with the columns named `{prefix}{column}` (a table alias).
fn size_sql_of(def: &ResourceDef, fixed: usize, prefix: &str) -> String {
    let per_column: usize = def.columns.iter().map(|c| 96 + c.name.len()).sum();
    let mut sql = format!("({} + {per_column}", fixed + 16 + def.name.len());
    for c in &def.columns {
        sql.push_str(&format!(" + COALESCE(octet_length({prefix}{}), 0)", c.name));
    }
    sql.push(')');
    sql
}

/// The `(uuid, size)` pairs of rows read by a query of the two.
fn sizes_from(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<(Uuid, usize)>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok((
                parse_uuid(&r.try_get::<String, _>(0)?)?,
                r.try_get::<i64, _>(1)?.max(0) as usize,
            ))
        })
        .collect()
}

fn snapshot_uuid(r: &SnapshotRow) -> Uuid {
    match r {
        SnapshotRow::Shared { uuid, .. }
        | SnapshotRow::Owned { uuid, .. }
        | SnapshotRow::OwnedTombstone { uuid, .. } => *uuid,
    }
}

/// The fixed part of [`SnapshotRow::wire_size`] plus room for the row's headers.
const SNAPSHOT_ROW_FIXED: usize = 200;

/// How many of the rows measured in `sizes` (in UUID order) the read takes within
/// `budget`, the last one's UUID, and whether the read is full (a limit stopped it).
fn cut(sizes: &[(Uuid, usize)], budget: Budget) -> (usize, Option<Uuid>, bool) {
    let n = fit(
        sizes.iter().take(budget.rows).map(|(_, s)| *s),
        budget.bytes,
        budget.force_one,
    );
    let full = n == budget.rows || n < sizes.len();
    (n, n.checked_sub(1).map(|i| sizes[i].0), full)
}

/// Shared rows after `after` in UUID order, within `budget`: live rows from the data table
/// (registers from their clocks) merged with dead ones from the side tables. Their sizes
/// are read first, then only the rows the page takes. Returns whether the read is full.
async fn read_shared_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    budget: Budget,
) -> Result<(Vec<SnapshotRow>, bool), StoreError> {
    let limit = budget.rows;
    let after = after
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_default();
    let live_sizes = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, {} FROM {} WHERE uuid > ? ORDER BY uuid LIMIT ?",
        size_sql(def, SNAPSHOT_ROW_FIXED),
        def.name
    )))
    .bind(after.clone())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let side_fixed = SNAPSHOT_ROW_FIXED + 16 + def.name.len();
    let side_sizes = sqlx::query(
        "SELECT r.uuid, ? + COALESCE((SELECT SUM(96 + octet_length(p.property) + COALESCE(octet_length(p.value), 0)) \
         FROM crdt_props p WHERE p.resource = r.resource AND p.uuid = r.uuid), 0) \
         FROM crdt_rows r WHERE r.resource = ? AND r.uuid > ? ORDER BY r.uuid LIMIT ?",
    )
    .bind(side_fixed as i64)
    .bind(def.name.clone())
    .bind(after.clone())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    // A row is in one place only (the side entry wins for rows not yet moved at open).
    let mut sizes: BTreeMap<Uuid, usize> = sizes_from(&live_sizes)?.into_iter().collect();
    sizes.extend(sizes_from(&side_sizes)?);
    let sizes: Vec<(Uuid, usize)> = sizes.into_iter().take(limit).collect();
    let (n, last, full) = cut(&sizes, budget);
    let Some(last) = last else {
        return Ok((Vec::new(), full));
    };
    let last = last.hyphenated().to_string();
    let live = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, crdt_clock{} FROM {} WHERE uuid > ? AND uuid <= ? ORDER BY uuid",
        column_list(def),
        def.name
    )))
    .bind(after.clone())
    .bind(last.clone())
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: BTreeMap<Uuid, SharedRow> = BTreeMap::new();
    for r in &live {
        if let Some((uuid, row)) = live_row_from(def, r)? {
            rows.insert(uuid, row);
        }
    }
    let heads = sqlx::query(
        "SELECT uuid, ts, alive FROM crdt_rows WHERE resource = ? AND uuid > ? AND uuid <= ? ORDER BY uuid",
    )
    .bind(def.name.clone())
    .bind(after)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let side: Result<BTreeMap<Uuid, SharedRow>, StoreError> =
        heads.iter().map(side_head_from).collect();
    let mut side = side?;
    if let (Some(first), Some(last)) = (side.keys().next(), side.keys().next_back()) {
        let mut props = sqlx::query(
            "SELECT uuid, property, ts, value FROM crdt_props WHERE resource = ? AND uuid >= ? AND uuid <= ?",
        )
        .bind(def.name.clone())
        .bind(first.hyphenated().to_string())
        .bind(last.hyphenated().to_string())
        .fetch(&mut *conn);
        while let Some(r) = props.try_next().await? {
            let (uuid, prop, register) = side_prop_from(&r)?;
            if let Some(row) = side.get_mut(&uuid) {
                row.props.insert(prop, register);
            }
        }
    }
    rows.extend(side);
    let out = rows
        .into_iter()
        .take(n)
        .map(|(uuid, row)| SnapshotRow::Shared {
            resource: def.name.clone(),
            uuid,
            exists_ts: row.exists_ts,
            alive: row.alive,
            // Property order is name order, as the digest expects.
            props: row
                .props
                .into_iter()
                .map(|(name, (ts, v))| (name, ts, v))
                .collect(),
        })
        .collect();
    Ok((out, full))
}

/// Owned rows after `after` in UUID order, within `budget` (sizes first, as
/// [`read_shared_rows`]). Returns whether the read is full.
async fn read_owned_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    budget: Budget,
) -> Result<(Vec<SnapshotRow>, bool), StoreError> {
    let after = after
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_default();
    let sizes = sizes_from(
        &sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT uuid, {} FROM {} WHERE uuid > ? ORDER BY uuid LIMIT ?",
            size_sql(def, SNAPSHOT_ROW_FIXED),
            def.name
        )))
        .bind(after.clone())
        .bind(budget.rows as i64)
        .fetch_all(&mut *conn)
        .await?,
    )?;
    let (_, last, full) = cut(&sizes, budget);
    let Some(last) = last else {
        return Ok((Vec::new(), full));
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, owner, crdt_ts, crdt_seq{}, \
         (SELECT claim FROM crdt_owned_claims c WHERE c.resource = ? AND c.uuid = t.uuid) \
         FROM {} t WHERE uuid > ? AND uuid <= ? ORDER BY uuid",
        column_list(def),
        def.name
    )))
    .bind(def.name.clone())
    .bind(after)
    .bind(last.hyphenated().to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = owned_row_from(r, def, 4)?;
        let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
        out.push(SnapshotRow::Owned {
            resource: def.name.clone(),
            uuid: row.uuid,
            ts,
            seq: r.try_get::<i64, _>(3)? as u64,
            values: row.values,
            claim: r
                .try_get::<Option<Vec<u8>>, _>(4 + def.columns.len())?
                .map(|b| Hlc::from_bytes(&b))
                .transpose()?,
        });
    }
    Ok((out, full))
}

/// Tombstones of owned rows after `after`, within `budget` (each is of one small size).
/// Returns whether the read is full.
async fn read_owned_tombstones(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    budget: Budget,
) -> Result<(Vec<SnapshotRow>, bool), StoreError> {
    let each = SnapshotRow::OwnedTombstone {
        resource: def.name.clone(),
        uuid: Uuid::nil(),
        ts: Hlc::ZERO,
        claim: Some(Hlc::ZERO),
    }
    .wire_size();
    let mut limit = budget.rows.min(budget.bytes / each);
    if budget.force_one {
        limit = limit.max(1);
    }
    let rows = sqlx::query(
        "SELECT uuid, ts, (SELECT claim FROM crdt_owned_claims c WHERE c.resource = t.resource \
         AND c.uuid = t.uuid) FROM crdt_rows t WHERE resource = ? AND alive = 0 AND uuid > ? \
         ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(
        after
            .map(|u| u.hyphenated().to_string())
            .unwrap_or_default(),
    )
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(SnapshotRow::OwnedTombstone {
            resource: def.name.clone(),
            uuid: parse_uuid(&r.try_get::<String, _>(0)?)?,
            ts: Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(1)?)?,
            claim: r
                .try_get::<Option<Vec<u8>>, _>(2)?
                .map(|b| Hlc::from_bytes(&b))
                .transpose()?,
        });
    }
    let full = out.len() == limit;
    Ok((out, full))
}
