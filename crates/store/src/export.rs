//! What a peer is sent: the ops it lacks (paged, owned batches expanded into their rows page
//! by page), state snapshots in pages, and the digest of all synced state. Reads only,
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
use crate::page::{OpsCursor, OpsPage};
use crate::proof::{Hash, Proof, op_hash};
use crate::registry::{Kind, ResourceDef};
use crate::sql::rows::{
    column_list, count_others_of_batch, key_of, live_row_from, others_of_batch, owned_row_from,
    parse_uuid, side_head_from, side_prop_from,
};
use crate::sql::{batches, oplog};
use crate::store::Store;

/// The largest page a caller may ask for (ops plus rows).
pub const MAX_PAGE: usize = 20_000;

/// Where a snapshot export continues: resource, phase (0 rows, 1 owned tombstones) and the
/// last UUID sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotPosition {
    /// Resource being exported.
    pub resource: String,
    /// 0: rows; 1: tombstones of an owned resource.
    pub phase: u8,
    /// Last UUID sent in this resource and phase.
    pub after: Option<Uuid>,
}

/// The digest of a store's synced state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    /// Hex blake3 of the state.
    pub digest: String,
    /// Live rows counted (shared and owned).
    pub rows: u64,
}

impl Store {
    /// A page of the ops a peer with version vector `theirs` lacks, including other
    /// authors' ops, in (author, seq) order, at most `limit` items (ops plus owned rows).
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
        let mut conn = self.pool().acquire().await?;
        let mut page = self.ops_page(&mut conn, theirs, cursor, limit).await?;
        page.proofs = prove_page(&mut conn, &page.changes).await?;
        Ok(page)
    }

    /// Proofs that this replica's log reached each author's contiguous seq: what a
    /// snapshot's receiver may raise its version vector with. Authors it cannot prove (no
    /// key or no head here: ops of a version before proofs) are left out.
    pub async fn snapshot_proofs(&self) -> Result<Vec<Proof>, StoreError> {
        let mine = self.version_vector();
        let mut conn = self.pool().acquire().await?;
        let mut out = Vec::new();
        for (author, v) in &mine.authors {
            if v.contiguous == 0 {
                continue;
            }
            if let Some(p) = prove_run(&mut conn, *author, v.contiguous + 1, &[]).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn ops_page(
        &self,
        conn: &mut SqliteConnection,
        theirs: &VersionVector,
        cursor: &OpsCursor,
        limit: usize,
    ) -> Result<OpsPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mine = self.version_vector();
        let mut page = OpsPage::default();
        let mut budget = limit;
        let start_author = cursor.position.map(|(a, _)| a);
        for (author, have) in mine.authors.range(start_author.unwrap_or(Uuid::nil())..) {
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
                let ops = oplog::chunks_after(conn, *author, after, upto).await?;
                if ops.is_empty() {
                    break;
                }
                for (op, _) in ops {
                    let seq = op.seq;
                    if their.has(seq) {
                        after = seq;
                        continue;
                    }
                    if op.method == Method::OwnedBatchCreate {
                        let start = match row_after.take() {
                            Some((seq, u)) if seq == op.seq => Some(u),
                            _ => None,
                        };
                        let (done, last_uuid) = self
                            .expand_batch(conn, &op, start, &mut budget, &mut page)
                            .await?;
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
                        page.changes.push(Change::Op(op));
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
    /// [`Op::groups`], as many as `budget` holds and at least one (so a page may exceed it
    /// by less than one group), each row with the values the batch wrote. A batch whose
    /// header has no groups (written before rows were committed to) is cut by `budget`
    /// alone; a receiver that checks proofs refuses its rows. Returns whether the batch
    /// ended, and the last row UUID sent.
    async fn expand_batch(
        &self,
        conn: &mut SqliteConnection,
        op: &Op,
        start: Option<Uuid>,
        budget: &mut usize,
        page: &mut OpsPage,
    ) -> Result<(bool, Option<Uuid>), StoreError> {
        let def = self.registry().get(&op.resource)?;
        let device = self.device_of(&op.author).unwrap_or(op.author);
        let (rows, first_group, done) = if op.groups.is_empty() {
            let want = (*budget).max(1);
            let mut rows = batch_rows(conn, def, op, device, start, want + 1).await?;
            let done = rows.len() <= want;
            rows.truncate(want);
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
            let (mut end, mut n) = (first, 0usize);
            while end < groups.len() && (end == first || n + groups[end].rows as usize <= *budget) {
                n += groups[end].rows as usize;
                end += 1;
            }
            let rows = batch_rows(conn, def, op, device, start, n).await?;
            (rows, first as u32, end == groups.len())
        };
        let last_uuid = rows.last().map(|r| r.uuid);
        *budget = budget.saturating_sub(rows.len().max(1));
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
    /// `limit` rows. A snapshot is exact for the version vector read before its first page
    /// (pages may also hold later changes, which merge harmlessly).
    pub async fn snapshot_page(
        &self,
        position: Option<&SnapshotPosition>,
        limit: usize,
    ) -> Result<(Vec<SnapshotRow>, Option<SnapshotPosition>), StoreError> {
        let mut conn = self.pool().acquire().await?;
        self.snapshot_page_on(&mut conn, position, limit).await
    }

    async fn snapshot_page_on(
        &self,
        conn: &mut SqliteConnection,
        position: Option<&SnapshotPosition>,
        limit: usize,
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
        loop {
            let def = reg.get(&pos.resource)?;
            let want = limit - out.len();
            let got = match (def.kind, pos.phase) {
                (Kind::Shared, _) => read_shared_rows(conn, def, pos.after, want).await?,
                (Kind::Owned, 0) => read_owned_rows(conn, def, pos.after, want).await?,
                (Kind::Owned, _) => read_owned_tombstones(conn, def, pos.after, want).await?,
            };
            let n = got.len();
            if let Some(last) = got.last() {
                pos.after = Some(snapshot_uuid(last));
            }
            out.extend(got);
            if n == want {
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

    /// A deterministic hash of all synced state (every register, tombstones included, and
    /// no op log), equal on two stores exactly when their synced state is equal. Read in one
    /// transaction, so it is consistent while writes go on.
    pub async fn digest(&self) -> Result<Digest, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut h = blake3::Hasher::new();
        let mut rows = 0u64;
        let mut pos: Option<SnapshotPosition> = None;
        loop {
            let (page, next) = self.snapshot_page_on(&mut tx, pos.as_ref(), 5_000).await?;
            for r in &page {
                hash_row(&mut h, r);
                rows += match r {
                    SnapshotRow::Shared { alive, .. } => *alive as u64,
                    SnapshotRow::Owned { .. } => 1,
                    SnapshotRow::OwnedTombstone { .. } => 0,
                };
            }
            match next {
                Some(p) => pos = Some(p),
                None => break,
            }
        }
        tx.rollback().await?;
        Ok(Digest {
            digest: h.finalize().to_hex().to_string(),
            rows,
        })
    }
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
    // The op hashes after the run up to the head: from the log, then the head's own tail.
    let stored_from = head.seq + 1 - head.tail.len() as u64;
    let mut tail: Vec<Hash> = Vec::new();
    if last + 1 < stored_from {
        let ops = oplog::chunks_after(conn, author, last, stored_from - 1).await?;
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

fn snapshot_uuid(r: &SnapshotRow) -> Uuid {
    match r {
        SnapshotRow::Shared { uuid, .. }
        | SnapshotRow::Owned { uuid, .. }
        | SnapshotRow::OwnedTombstone { uuid, .. } => *uuid,
    }
}

fn hash_str(h: &mut blake3::Hasher, s: &str) {
    h.update(&(s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn hash_row(h: &mut blake3::Hasher, r: &SnapshotRow) {
    match r {
        SnapshotRow::Shared {
            resource,
            uuid,
            exists_ts,
            alive,
            props,
        } => {
            h.update(b"S");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&exists_ts.to_bytes());
            h.update(&[*alive as u8]);
            h.update(&(props.len() as u64).to_be_bytes());
            for (name, ts, v) in props {
                hash_str(h, name);
                h.update(&ts.to_bytes());
                v.hash_into(h);
            }
        }
        SnapshotRow::Owned {
            resource,
            uuid,
            ts,
            seq,
            values,
            claim,
        } => {
            h.update(b"O");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&ts.to_bytes());
            h.update(&seq.to_be_bytes());
            for v in values {
                v.hash_into(h);
            }
            h.update(&claim.unwrap_or(*ts).to_bytes());
        }
        SnapshotRow::OwnedTombstone {
            resource,
            uuid,
            ts,
            claim,
        } => {
            h.update(b"T");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&ts.to_bytes());
            h.update(&claim.unwrap_or(*ts).to_bytes());
        }
    }
}

/// Up to `limit` shared rows after `after` in UUID order: live rows from the data table
/// (registers from their clocks) merged with dead ones from the side tables.
async fn read_shared_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let after = after
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_default();
    let live = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, crdt_clock{} FROM {} WHERE uuid > ? ORDER BY uuid LIMIT ?",
        column_list(def),
        def.name
    )))
    .bind(after.clone())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: BTreeMap<Uuid, SharedRow> = BTreeMap::new();
    for r in &live {
        if let Some((uuid, row)) = live_row_from(def, r)? {
            rows.insert(uuid, row);
        }
    }
    let heads = sqlx::query(
        "SELECT uuid, ts, alive FROM crdt_rows WHERE resource = ? AND uuid > ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(after)
    .bind(limit as i64)
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
    // A row is in one place only (the side entry wins for rows not yet moved at open).
    rows.extend(side);
    Ok(rows
        .into_iter()
        .take(limit)
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
        .collect())
}

async fn read_owned_rows(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, owner, crdt_ts, crdt_seq{}, \
         (SELECT claim FROM crdt_owned_claims c WHERE c.resource = ? AND c.uuid = t.uuid) \
         FROM {} t WHERE uuid > ? ORDER BY uuid LIMIT ?",
        column_list(def),
        def.name
    )))
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
    Ok(out)
}

async fn read_owned_tombstones(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<SnapshotRow>, StoreError> {
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
    Ok(out)
}
