//! Owned rows: one owner per row, the device whose create has the lowest timestamp, and the
//! row is the owner's latest op (the rule is [`OwnedRegisters`]). Rows come in batches.
//!
//! Where a row's registers live: the owner's latest op is the row itself (a live row in the
//! resource's table, or a tombstone in `crdt_rows` with its owner); the claim is the row's
//! own timestamp unless `crdt_owned_claims` holds another; the other devices' latest ops are
//! in `crdt_owned_others`. A row written once by its owner, the usual case, has nothing in
//! either, and a load only reads them when they hold rows of the resource.
//!
//! A batch's header commits to the values it wrote to each row ([`crate::proof::check_rows`]),
//! so whoever sends the batch on must send them: a row of a batch that no longer holds the
//! batch's write here (a later op of its device replaced it, or arrived first) keeps those
//! values in `crdt_owned_originals` (see [`crate::sql::batches`]). A write is held while it is
//! some device's latest op on the row (the row itself, or one of the others); once replaced
//! it never comes back, so a write is kept there exactly when it was seen and is not held.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::EngineOutcome;
use super::shared::{SideTables, delete_data, delete_side, not_found};
use crate::clock::Hlc;
use crate::error::StoreError;
use crate::merge::{OwnedOutcome, OwnedRegisters, OwnedWrite};
use crate::op::{Change, Method, OpId, OwnedRow, RejectReason, Rejection, RowEvent};
use crate::registry::ResourceDef;
use crate::sql::batches::{self, Original};
use crate::sql::derived;
use crate::sql::rows::{decode_owned_values, encode_owned_values, parse_uuid};
use crate::sql::{exec, in_list, owned_chunks, query, rows_per_statement, values_list};
use crate::value::Value;

/// Who owns what an author writes: the device the author belongs to. A device writes under
/// one author UUID for now, so that is the author itself unless a map says otherwise; every
/// ownership decision of the engine asks [`Owners::owner_of`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Owners<'a> {
    /// Author -> device, for the authors that are not their own device.
    devices: Option<&'a HashMap<Uuid, Uuid>>,
}

impl<'a> Owners<'a> {
    /// Authors mapped to their devices by `devices` (an author not in it is its own).
    pub(crate) fn with(devices: &'a HashMap<Uuid, Uuid>) -> Owners<'a> {
        Owners {
            devices: Some(devices),
        }
    }

    /// The device that owns what `author` writes.
    pub(crate) fn owner_of(&self, author: Uuid) -> Uuid {
        self.devices
            .and_then(|m| m.get(&author).copied())
            .unwrap_or(author)
    }
}

/// Whether a side table holds any row of a resource, asked once per load.
#[derive(Default)]
struct Holds(Option<bool>);

impl Holds {
    async fn ask(
        &mut self,
        conn: &mut SqliteConnection,
        table: &str,
        resource: &str,
    ) -> Result<bool, StoreError> {
        if let Some(b) = self.0 {
            return Ok(b);
        }
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE resource = ?)");
        let b = query(sql)
            .bind(resource.to_owned())
            .fetch_one(&mut *conn)
            .await?
            .try_get::<bool, _>(0)?;
        self.0 = Some(b);
        Ok(b)
    }
}

fn keys_of(chunk: &[Uuid]) -> Vec<String> {
    chunk.iter().map(|u| u.hyphenated().to_string()).collect()
}

/// The registers of the owned rows `uuids` of `def` (rows stored nowhere are absent).
async fn load_owned(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    uuids: &[Uuid],
) -> Result<HashMap<Uuid, OwnedRegisters>, StoreError> {
    let cols: String = def
        .columns
        .iter()
        .map(|c| format!(", {}", c.name))
        .collect();
    let mut out: HashMap<Uuid, OwnedRegisters> = HashMap::new();
    let (mut side, mut claims, mut others) =
        (SideTables::default(), Holds::default(), Holds::default());
    for chunk in uuids.chunks(rows_per_statement(1)) {
        let keys = keys_of(chunk);
        let sql = format!(
            "SELECT uuid, owner, crdt_ts, crdt_seq{cols} FROM {} WHERE uuid IN ({})",
            def.name,
            in_list(keys.len())
        );
        let mut q = query(sql);
        for k in &keys {
            q = q.bind(k.clone());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
            let owner = parse_uuid(&r.try_get::<String, _>(1)?)?;
            let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
            let seq = r.try_get::<i64, _>(3)? as u64;
            let mut values = Vec::with_capacity(def.columns.len());
            for i in 0..def.columns.len() {
                values.push(r.try_get::<Value, _>(4 + i)?);
            }
            let write = OwnedWrite {
                ts,
                seq,
                values: Some(values),
            };
            out.insert(uuid, registers_of(owner, write));
        }
        // A live owned row has no tombstone: only look for the others'.
        let missing = not_found(chunk, &keys, &out);
        if !missing.is_empty() && side.holds(conn, &def.name).await? {
            let sql = format!(
                "SELECT uuid, owner, ts FROM crdt_rows WHERE resource = ? AND alive = 0 AND uuid IN ({})",
                in_list(missing.len())
            );
            let mut q = query(sql).bind(def.name.clone());
            for k in missing {
                q = q.bind(k.clone());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
                let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
                // Tombstones of older versions may lack an owner: it is the delete's author.
                let owner = r
                    .try_get::<Option<String>, _>(1)?
                    .map(|s| parse_uuid(&s))
                    .transpose()?
                    .unwrap_or(ts.author);
                let write = OwnedWrite {
                    ts,
                    seq: 0,
                    values: None,
                };
                out.entry(uuid)
                    .or_insert_with(|| registers_of(owner, write));
            }
        }
        if claims.ask(conn, "crdt_owned_claims", &def.name).await? {
            let sql = format!(
                "SELECT uuid, claim FROM crdt_owned_claims WHERE resource = ? AND uuid IN ({})",
                in_list(keys.len())
            );
            let mut q = query(sql).bind(def.name.clone());
            for k in &keys {
                q = q.bind(k.clone());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
                let claim = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(1)?)?;
                if let Some(regs) = out.get_mut(&uuid)
                    && let Some((_, c)) = regs.claim.as_mut()
                {
                    *c = claim;
                }
            }
        }
        if others.ask(conn, "crdt_owned_others", &def.name).await? {
            let sql = format!(
                "SELECT uuid, device, ts, seq, alive, vals FROM crdt_owned_others \
                 WHERE resource = ? AND uuid IN ({})",
                in_list(keys.len())
            );
            let mut q = query(sql).bind(def.name.clone());
            for k in &keys {
                q = q.bind(k.clone());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
                let device = parse_uuid(&r.try_get::<String, _>(1)?)?;
                let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
                let seq = r.try_get::<i64, _>(3)? as u64;
                let values = if r.try_get::<i64, _>(4)? != 0 {
                    let raw = r.try_get::<Option<Vec<u8>>, _>(5)?.unwrap_or_default();
                    Some(decode_owned_values(&raw)?)
                } else {
                    None
                };
                out.entry(uuid)
                    .or_default()
                    .latest
                    .insert(device, OwnedWrite { ts, seq, values });
            }
        }
    }
    Ok(out)
}

/// The registers of a row whose owner's latest op is `write`, claimed at its own timestamp
/// (until the claims table says otherwise).
fn registers_of(owner: Uuid, write: OwnedWrite) -> OwnedRegisters {
    OwnedRegisters {
        claim: Some((owner, write.ts)),
        latest: BTreeMap::from([(owner, write)]),
    }
}

/// The claim a row stores beside it: none when it is the row's own timestamp.
fn stored_claim(regs: &OwnedRegisters) -> Option<Hlc> {
    let (_, claim) = regs.claim?;
    (regs.state().map(|w| w.ts) != Some(claim)).then_some(claim)
}

/// What is stored for one row: its owner and state, its claim, the other devices' ops.
type Stored<'r> = (
    Option<(Uuid, &'r OwnedWrite)>,
    Option<Hlc>,
    BTreeMap<Uuid, &'r OwnedWrite>,
);

fn stored(regs: Option<&OwnedRegisters>) -> Stored<'_> {
    match regs {
        None => (None, None, BTreeMap::new()),
        Some(r) => (
            r.owner().zip(r.state()),
            stored_claim(r),
            r.others().map(|(d, w)| (*d, w)).collect(),
        ),
    }
}

/// Where the changes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// This node's writes.
    Local,
    /// Peers' ops (an owned batch's rows checked against its header when proven).
    Peer,
    /// Snapshot rows rewritten as changes: state, not the batches' own rows, so they are
    /// not kept as a batch's values when they do not hold.
    Snapshot,
}

/// Merges `items`, changes of owned rows of `def` in order, and stores what moved.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    items: &[&Change],
    owners: &Owners<'_>,
    source: Source,
    out: &mut EngineOutcome,
    rejected_ops: &mut HashMap<OpId, String>,
) -> Result<(), StoreError> {
    let local = source == Source::Local;
    let mut uuids: BTreeSet<Uuid> = BTreeSet::new();
    for c in items {
        match c {
            Change::Op(op) => uuids.extend(op.uuid),
            Change::OwnedRows { rows, .. } => uuids.extend(rows.iter().map(|r| r.uuid)),
        }
    }
    let uuids: Vec<Uuid> = uuids.into_iter().collect();
    let current = load_owned(conn, def, &uuids).await?;
    let mut merged: BTreeMap<Uuid, OwnedRegisters> = BTreeMap::new();
    // The batches' writes seen here, to keep those that do not hold (see the module docs).
    let mut arrived: Vec<(Uuid, Uuid, u64, &Vec<Value>)> = Vec::new();

    let mut refuse = |id: OpId, uuid: Uuid, owner: Uuid, out: &mut EngineOutcome| {
        let why = format!("row {uuid} of {} is owned by {owner}", def.name);
        out.not_owner.get_or_insert((uuid, owner));
        out.rejected
            .push((id, Rejection::new(RejectReason::NotOwner, why.clone())));
        rejected_ops.insert(id, why);
    };

    for c in items {
        match c {
            Change::OwnedRows {
                header, rows, last, ..
            } => {
                let device = owners.owner_of(header.author);
                let mut written = 0usize;
                for OwnedRow { uuid, values } in rows {
                    if source != Source::Snapshot {
                        arrived.push((*uuid, header.author, header.seq, values));
                    }
                    let regs = merged
                        .entry(*uuid)
                        .or_insert_with(|| current.get(uuid).cloned().unwrap_or_default());
                    let write = OwnedWrite {
                        ts: header.ts(),
                        seq: header.seq,
                        values: Some(values.clone()),
                    };
                    match regs.merge(device, write) {
                        OwnedOutcome::Apply => written += 1,
                        OwnedOutcome::Ignore | OwnedOutcome::Unclaimed => {}
                        OwnedOutcome::NotOwner(owner) => refuse(header.id(), *uuid, owner, out),
                    }
                }
                out.rows += written;
                if *last || written > 0 {
                    out.events.push(RowEvent {
                        resource: def.name.clone(),
                        uuid: None,
                        method: Method::OwnedBatchCreate,
                        author: header.author,
                        remote: !local,
                        count: Some(written as u64),
                    });
                }
            }
            Change::Op(op) if op.method == Method::OwnedDelete => {
                let Some(uuid) = op.uuid else { continue };
                let regs = merged
                    .entry(uuid)
                    .or_insert_with(|| current.get(&uuid).cloned().unwrap_or_default());
                let write = OwnedWrite {
                    ts: op.ts(),
                    seq: 0,
                    values: None,
                };
                match regs.merge(owners.owner_of(op.author), write) {
                    OwnedOutcome::Apply => out.events.push(RowEvent::of(op, !local)),
                    OwnedOutcome::Ignore | OwnedOutcome::Unclaimed => {}
                    OwnedOutcome::NotOwner(owner) => refuse(op.id(), uuid, owner, out),
                }
            }
            // Validation keeps other methods away from owned resources.
            Change::Op(_) => {}
        }
    }
    let originals = not_held(&current, &merged, arrived);
    batches::keep_originals(conn, &def.name, originals).await?;
    store(conn, def, &current, &merged).await
}

/// The batches' writes seen (stored before, or `arrived` now) that no device's latest op
/// on their row is after the merge: what `crdt_owned_originals` keeps.
fn not_held(
    current: &HashMap<Uuid, OwnedRegisters>,
    merged: &BTreeMap<Uuid, OwnedRegisters>,
    arrived: Vec<(Uuid, Uuid, u64, &Vec<Value>)>,
) -> Vec<Original> {
    let held = |u: &Uuid, author: Uuid, seq: u64| {
        merged.get(u).is_some_and(|r| {
            r.latest
                .values()
                .any(|w| w.seq == seq && w.ts.author == author && w.alive())
        })
    };
    let mut out: BTreeMap<(Uuid, u64, Uuid), Vec<Value>> = BTreeMap::new();
    for (u, regs) in current {
        for w in regs.latest.values() {
            if let Some(values) = &w.values
                && w.seq > 0
                && !held(u, w.ts.author, w.seq)
            {
                out.entry((w.ts.author, w.seq, *u))
                    .or_insert_with(|| values.clone());
            }
        }
    }
    for (u, author, seq, values) in arrived {
        if !held(&u, author, seq) {
            out.entry((author, seq, u))
                .or_insert_with(|| values.clone());
        }
    }
    out.into_iter()
        .map(|((author, seq, u), values)| (author, seq, u, values))
        .collect()
}

/// Stores the registers of `merged` that differ from `current`, and the derived `files`.
async fn store(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    current: &HashMap<Uuid, OwnedRegisters>,
    merged: &BTreeMap<Uuid, OwnedRegisters>,
) -> Result<(), StoreError> {
    let (cas_idx, files) = if derived::tracks(def) {
        (
            def.column_index("cas_id"),
            derived::Files::load(conn).await?,
        )
    } else {
        (None, derived::Files::all())
    };
    let mut upserts: Vec<(Uuid, Uuid, Hlc, u64, Vec<Value>)> = Vec::new();
    let mut tombstones: Vec<(Uuid, Uuid, Hlc)> = Vec::new();
    let mut drop_rows: Vec<Uuid> = Vec::new();
    let mut drop_tombstones: Vec<Uuid> = Vec::new();
    let mut set_claims: Vec<(Uuid, Hlc)> = Vec::new();
    let mut drop_claims: Vec<Uuid> = Vec::new();
    let mut set_others: Vec<(Uuid, Uuid, OwnedWrite)> = Vec::new();
    let mut drop_others: Vec<(Uuid, Uuid)> = Vec::new();
    // The derived `files`: a row new here only adds to its file's count and size; a row
    // replaced or deleted has its old and new files recounted from file_paths.
    let mut recount: BTreeSet<String> = BTreeSet::new();
    let mut added: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();

    for (u, after) in merged {
        let (was, was_claim, was_others) = stored(current.get(u));
        let (now, now_claim, now_others) = stored(Some(after));
        if now != was {
            let old_live = was.and_then(|(_, w)| w.values.as_ref());
            // A row once claimed keeps its claim: only a row never created has no state.
            if let Some((owner, w)) = now {
                match &w.values {
                    Some(values) => {
                        if matches!(was, Some((_, w)) if !w.alive()) {
                            drop_tombstones.push(*u);
                        }
                        upserts.push((*u, owner, w.ts, w.seq, values.clone()));
                    }
                    None => {
                        if old_live.is_some() {
                            drop_rows.push(*u);
                        }
                        tombstones.push((*u, owner, w.ts));
                    }
                }
            }
            if let Some(ci) = cas_idx {
                let cas = |v: Option<&Vec<Value>>| match v.and_then(|v| v.get(ci)) {
                    Some(Value::Text(c)) => Some(c.clone()),
                    _ => None,
                };
                let new_live = now.and_then(|(_, w)| w.values.as_ref());
                recount.extend(cas(old_live));
                if let Some(c) = cas(new_live) {
                    if old_live.is_some() {
                        recount.insert(c);
                    } else {
                        let size = match def
                            .column_index("size_bytes")
                            .and_then(|i| new_live.and_then(|v| v.get(i)))
                        {
                            Some(Value::Int(n)) => Some(*n),
                            _ => None,
                        };
                        let e = added.entry(c).or_insert((0, None));
                        e.0 += 1;
                        e.1 = match (e.1, size) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
        }
        if now_claim != was_claim {
            match now_claim {
                Some(c) => set_claims.push((*u, c)),
                None => drop_claims.push(*u),
            }
        }
        for (d, w) in &now_others {
            if was_others.get(d) != Some(w) {
                set_others.push((*u, *d, (*w).clone()));
            }
        }
        for d in was_others.keys() {
            if !now_others.contains_key(d) {
                drop_others.push((*u, *d));
            }
        }
    }
    added.retain(|cas, _| !recount.contains(cas) && files.keeps(cas));
    recount.retain(|cas| files.keeps(cas));

    let ncols = def.columns.len() + 4;
    let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let set = ["owner", "crdt_ts", "crdt_seq"]
        .iter()
        .chain(names.iter())
        .map(|n| format!("{n} = excluded.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in owned_chunks(upserts, rows_per_statement(ncols)) {
        let sql = format!(
            "INSERT INTO {} (uuid, owner, crdt_ts, crdt_seq, {}) VALUES {} ON CONFLICT (uuid) DO UPDATE SET {}",
            def.name,
            names.join(", "),
            values_list(chunk.len(), ncols),
            set
        );
        exec(conn, sql, |mut q| {
            for (u, owner, ts, seq, values) in chunk {
                q = q
                    .bind(u.hyphenated().to_string())
                    .bind(owner.hyphenated().to_string())
                    .bind(ts.to_bytes().to_vec())
                    .bind(seq as i64);
                for v in values {
                    q = q.bind(v);
                }
            }
            q
        })
        .await?;
    }
    delete_data(conn, &def.name, &drop_rows).await?;
    for chunk in owned_chunks(tombstones, rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO crdt_rows (resource, uuid, ts, alive, owner) VALUES {} \
             ON CONFLICT (resource, uuid) DO UPDATE SET ts = excluded.ts, alive = 0, owner = excluded.owner",
            values_list(chunk.len(), 5)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            for (u, owner, ts) in chunk {
                q = q
                    .bind(name.clone())
                    .bind(u.hyphenated().to_string())
                    .bind(ts.to_bytes().to_vec())
                    .bind(0i64)
                    .bind(owner.hyphenated().to_string());
            }
            q
        })
        .await?;
    }
    delete_side(conn, &def.name, &drop_tombstones, &["crdt_rows"]).await?;
    for chunk in owned_chunks(set_claims, rows_per_statement(3)) {
        let sql = format!(
            "INSERT INTO crdt_owned_claims (resource, uuid, claim) VALUES {} \
             ON CONFLICT (resource, uuid) DO UPDATE SET claim = excluded.claim",
            values_list(chunk.len(), 3)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            for (u, claim) in chunk {
                q = q
                    .bind(name.clone())
                    .bind(u.hyphenated().to_string())
                    .bind(claim.to_bytes().to_vec());
            }
            q
        })
        .await?;
    }
    delete_side(conn, &def.name, &drop_claims, &["crdt_owned_claims"]).await?;
    for chunk in owned_chunks(set_others, rows_per_statement(7)) {
        let sql = format!(
            "INSERT INTO crdt_owned_others (resource, uuid, device, ts, seq, alive, vals) VALUES {} \
             ON CONFLICT (resource, uuid, device) DO UPDATE SET ts = excluded.ts, \
             seq = excluded.seq, alive = excluded.alive, vals = excluded.vals",
            values_list(chunk.len(), 7)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            for (u, d, w) in chunk {
                q = q
                    .bind(name.clone())
                    .bind(u.hyphenated().to_string())
                    .bind(d.hyphenated().to_string())
                    .bind(w.ts.to_bytes().to_vec())
                    .bind(w.seq as i64)
                    .bind(w.alive() as i64)
                    .bind(w.values.as_deref().map(encode_owned_values));
            }
            q
        })
        .await?;
    }
    for chunk in owned_chunks(drop_others, rows_per_statement(2)) {
        let sql = format!(
            "DELETE FROM crdt_owned_others WHERE resource = ? AND (uuid, device) IN (VALUES {})",
            values_list(chunk.len(), 2)
        );
        let name = def.name.clone();
        exec(conn, sql, |mut q| {
            q = q.bind(name);
            for (u, d) in chunk {
                q = q
                    .bind(u.hyphenated().to_string())
                    .bind(d.hyphenated().to_string());
            }
            q
        })
        .await?;
    }
    if !recount.is_empty() {
        derived::rebuild_files(conn, &recount.into_iter().collect::<Vec<_>>()).await?;
    }
    derived::add_files(conn, added.into_iter().collect()).await?;
    Ok(())
}
