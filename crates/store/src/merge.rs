//! The merge rules, as pure functions: from the current registers of a row and an op to the
//! new registers. No SQL here; [`crate::engine`] loads the registers, calls these, and stores
//! what changed.
//!
//! - Each property is a last-writer-wins register ordered by [`Hlc`] (time, then author).
//! - Row existence is a last-writer-wins register over create and delete. A create sets
//!   every column (missing ones to null) at its timestamp, so an update older than a delete
//!   can never show again: only a create newer than the delete revives the row, and it
//!   overwrites every older property. An update never changes existence.
//! - Owned rows: one owner per row, the device whose create has the lowest timestamp (its
//!   claim); the row is the owner's latest op (whole-row last-writer-wins), and the other
//!   devices' ops are refused. Both are a min and a max over the set of ops, so any
//!   arrival order ends the same; a tombstone keeps the claim, so a later create of another
//!   device is refused.
//! - Registers only move forward, so applying an op twice, or in any order, ends the same.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::clock::Hlc;
use crate::value::Value;

/// The merge state of one shared row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SharedRow {
    /// Existence register: the timestamp of the create or delete that set it.
    pub exists_ts: Hlc,
    /// Existence register: whether the row is alive.
    pub alive: bool,
    /// Property registers.
    pub props: BTreeMap<String, (Hlc, Value)>,
}

/// What a merge changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    /// The existence register moved.
    pub existence: bool,
    /// At least one property register moved.
    pub props: bool,
}

impl Changed {
    /// Whether anything moved.
    pub fn any(self) -> bool {
        self.existence || self.props
    }
}

impl SharedRow {
    fn set_prop(&mut self, name: &str, ts: Hlc, value: &Value) -> bool {
        match self.props.get(name) {
            Some((cur, _)) if *cur >= ts => false,
            _ => {
                self.props.insert(name.to_owned(), (ts, value.clone()));
                true
            }
        }
    }

    /// A create at `ts` with the given fields; `columns` are all the resource's columns.
    pub fn create<'a>(
        &mut self,
        ts: Hlc,
        columns: impl Iterator<Item = &'a str>,
        fields: &BTreeMap<String, Value>,
    ) -> Changed {
        let mut changed = Changed::default();
        if ts > self.exists_ts {
            self.exists_ts = ts;
            self.alive = true;
            changed.existence = true;
        }
        for col in columns {
            let v = fields.get(col).unwrap_or(&Value::Null);
            changed.props |= self.set_prop(col, ts, v);
        }
        changed
    }

    /// An update of one property at `ts`.
    pub fn update(&mut self, ts: Hlc, property: &str, value: &Value) -> Changed {
        Changed {
            existence: false,
            props: self.set_prop(property, ts, value),
        }
    }

    /// A delete at `ts`.
    pub fn delete(&mut self, ts: Hlc) -> Changed {
        if ts > self.exists_ts {
            let was_alive = self.alive;
            self.exists_ts = ts;
            self.alive = false;
            // The register moved even if the row was already dead: its timestamp is state.
            let _ = was_alive;
            Changed {
                existence: true,
                props: false,
            }
        } else {
            Changed::default()
        }
    }

    /// The row's values in column order (null where no register exists).
    pub fn values<'a>(&self, columns: impl Iterator<Item = &'a str>) -> Vec<Value> {
        columns
            .map(|c| self.props.get(c).map_or(Value::Null, |(_, v)| v.clone()))
            .collect()
    }
}

/// One device's latest op on an owned row: a create (a row of an `OwnedBatchCreate`) or a
/// delete.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedWrite {
    /// The op's timestamp.
    pub ts: Hlc,
    /// The batch's sequence number (0 for a delete).
    pub seq: u64,
    /// The row's values, in column order, for a create; `None` for a delete.
    pub values: Option<Vec<Value>>,
}

impl OwnedWrite {
    /// Whether it is a create (the row is alive after it).
    pub fn alive(&self) -> bool {
        self.values.is_some()
    }
}

/// The merge state of one owned row, a function of the set of ops on it, whatever their
/// order: the claim (the lowest create, min of timestamps) and per device its latest op
/// (max of timestamps). The owner is the claim's device and the row is the owner's latest
/// op; the other devices' latest ops are kept (one per device) because one of them takes
/// the row over if its device's earlier create arrives later.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedRegisters {
    /// The owner (a device) and the timestamp of the lowest create seen, by any of its
    /// authors. `None` while only deletes are known.
    pub claim: Option<(Uuid, Hlc)>,
    /// Per device, its latest op on the row.
    pub latest: BTreeMap<Uuid, OwnedWrite>,
}

/// What an owned write or delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedOutcome {
    /// The row moved: the owner's newest op, or a takeover by an earlier create.
    Apply,
    /// Already superseded (or the same op again): the row is unchanged.
    Ignore,
    /// No device has created the row yet (only deletes are known): the delete is kept for
    /// its device, the row is unchanged.
    Unclaimed,
    /// Another device owns the row: refused. The op is still kept as its device's latest,
    /// in case that device's earlier create arrives and takes the row over.
    NotOwner(Uuid),
}

impl OwnedRegisters {
    /// The owner: the device of the lowest create.
    pub fn owner(&self) -> Option<Uuid> {
        self.claim.map(|(d, _)| d)
    }

    /// The row's state: the owner's latest op (`None` while no device created it).
    pub fn state(&self) -> Option<&OwnedWrite> {
        self.latest.get(&self.owner()?)
    }

    /// The other devices' latest ops.
    pub fn others(&self) -> impl Iterator<Item = (&Uuid, &OwnedWrite)> {
        let owner = self.owner();
        self.latest.iter().filter(move |(d, _)| Some(**d) != owner)
    }

    /// Merges a create (`values` set) or a delete by `device` (the owner identity of the
    /// op's author). A device's op counts if the device owns the row once it is merged: its
    /// create is the lowest seen, or it already held the claim. A device takes the row
    /// over only with a create older than the claim, so a tombstone, which keeps the claim,
    /// refuses every later create of another device.
    pub fn merge(&mut self, device: Uuid, write: OwnedWrite) -> OwnedOutcome {
        let before = self.state().cloned();
        if write.alive() && self.claim.is_none_or(|(_, c)| write.ts < c) {
            self.claim = Some((device, write.ts));
        }
        match self.latest.get(&device) {
            Some(cur) if cur.ts >= write.ts => {}
            _ => {
                self.latest.insert(device, write);
            }
        }
        let after = self.state();
        match self.owner() {
            None => OwnedOutcome::Unclaimed,
            Some(owner) if owner != device => OwnedOutcome::NotOwner(owner),
            Some(_) if after != before.as_ref() => OwnedOutcome::Apply,
            Some(_) => OwnedOutcome::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u64, author: u128) -> Hlc {
        Hlc::at(time, author)
    }

    const COLS: [&str; 2] = ["name", "color"];

    fn fields(name: &str) -> BTreeMap<String, Value> {
        BTreeMap::from([("name".to_owned(), Value::Text(name.to_owned()))])
    }

    #[test]
    fn concurrent_updates_pick_the_same_winner_in_any_order() {
        let a = (ts(10, 1), Value::Text("a".into()));
        let b = (ts(10, 2), Value::Text("b".into()));
        let mut r1 = SharedRow::default();
        r1.update(a.0, "name", &a.1);
        r1.update(b.0, "name", &b.1);
        let mut r2 = SharedRow::default();
        r2.update(b.0, "name", &b.1);
        r2.update(a.0, "name", &a.1);
        assert_eq!(r1, r2);
        assert_eq!(
            r1.props["name"].1,
            Value::Text("b".into()),
            "higher author wins a tie"
        );
    }

    #[test]
    fn update_older_than_delete_does_not_resurrect() {
        let mut r = SharedRow::default();
        r.create(ts(1, 1), COLS.into_iter(), &fields("x"));
        r.delete(ts(5, 2));
        let c = r.update(ts(3, 1), "name", &Value::Text("late".into()));
        assert!(!r.alive);
        assert!(c.props && !c.existence);
        // Even a newer update does not revive it.
        r.update(ts(9, 1), "name", &Value::Text("newer".into()));
        assert!(!r.alive);
    }

    #[test]
    fn recreate_after_delete_overwrites_older_updates() {
        let mut r = SharedRow::default();
        r.update(ts(3, 1), "color", &Value::Text("red".into()));
        r.delete(ts(5, 2));
        r.create(ts(7, 1), COLS.into_iter(), &fields("again"));
        assert!(r.alive);
        assert_eq!(r.props["color"].1, Value::Null);
        // A create older than the delete does not revive.
        let mut d = SharedRow::default();
        d.delete(ts(5, 2));
        d.create(ts(4, 1), COLS.into_iter(), &fields("old"));
        assert!(!d.alive);
    }

    #[test]
    fn duplicate_is_a_no_op() {
        let mut r = SharedRow::default();
        assert!(r.create(ts(1, 1), COLS.into_iter(), &fields("x")).any());
        let before = r.clone();
        assert!(!r.create(ts(1, 1), COLS.into_iter(), &fields("x")).any());
        assert!(!r.update(ts(1, 1), "name", &Value::Text("x".into())).any());
        assert_eq!(r, before);
    }

    fn create(time: u64, author: u128, name: &str) -> (Uuid, OwnedWrite) {
        (
            Uuid::from_u128(author),
            OwnedWrite {
                ts: ts(time, author),
                seq: time,
                values: Some(vec![Value::Text(name.to_owned())]),
            },
        )
    }

    fn delete(time: u64, author: u128) -> (Uuid, OwnedWrite) {
        (
            Uuid::from_u128(author),
            OwnedWrite {
                ts: ts(time, author),
                seq: 0,
                values: None,
            },
        )
    }

    fn merged(ops: &[(Uuid, OwnedWrite)]) -> OwnedRegisters {
        let mut r = OwnedRegisters::default();
        for (d, w) in ops {
            r.merge(*d, w.clone());
        }
        r
    }

    /// Every order of `ops` ends in the same registers.
    fn same_in_every_order(ops: &[(Uuid, OwnedWrite)]) -> OwnedRegisters {
        fn permutations(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in permutations(n - 1) {
                for i in 0..=p.len() {
                    let mut q = p.clone();
                    q.insert(i, n - 1);
                    out.push(q);
                }
            }
            out
        }
        let first = merged(ops);
        for p in permutations(ops.len()) {
            let order: Vec<_> = p.iter().map(|&i| ops[i].clone()).collect();
            assert_eq!(merged(&order), first, "order {p:?}");
        }
        first
    }

    #[test]
    fn owned_rows_only_change_by_their_owner() {
        let mut r = merged(&[create(5, 1, "a")]);
        let (other, late) = create(9, 2, "b");
        assert_eq!(
            r.merge(other, late),
            OwnedOutcome::NotOwner(Uuid::from_u128(1))
        );
        let (other, del) = delete(9, 2);
        assert_eq!(
            r.merge(other, del),
            OwnedOutcome::NotOwner(Uuid::from_u128(1))
        );
        let (owner, newer) = create(7, 1, "a2");
        assert_eq!(r.merge(owner, newer.clone()), OwnedOutcome::Apply);
        assert_eq!(r.merge(owner, newer), OwnedOutcome::Ignore);
        let (owner, older) = create(6, 1, "a1");
        assert_eq!(r.merge(owner, older), OwnedOutcome::Ignore);
        assert_eq!(
            r.state().and_then(|w| w.values.clone()),
            Some(vec![Value::Text("a2".into())])
        );
    }

    #[test]
    fn the_lowest_create_owns_the_row_in_any_order() {
        let r = same_in_every_order(&[create(5, 1, "a"), create(3, 2, "b"), create(8, 2, "b2")]);
        assert_eq!(r.owner(), Some(Uuid::from_u128(2)));
        // Its latest op is the row, even if it arrived before the create that took over.
        assert_eq!(r.state().map(|w| w.ts), Some(ts(8, 2)));
        // A tie in time goes to the lower author (timestamps order by time, then author).
        let t = same_in_every_order(&[create(4, 2, "b"), create(4, 1, "a")]);
        assert_eq!(t.owner(), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_delete_before_its_create_is_not_lost() {
        // Device 2's delete arrives first (no owner yet), then device 1 claims, then device
        // 2's earlier create takes over: its delete is its latest op, so the row is dead.
        let mut r = OwnedRegisters::default();
        let (d2, del) = delete(9, 2);
        assert_eq!(r.merge(d2, del), OwnedOutcome::Unclaimed);
        let (d1, c1) = create(5, 1, "a");
        assert_eq!(r.merge(d1, c1), OwnedOutcome::Apply);
        let (d2, c2) = create(3, 2, "b");
        assert_eq!(r.merge(d2, c2), OwnedOutcome::Apply);
        assert_eq!(r.owner(), Some(d2));
        assert_eq!(
            r.state().map(|w| (w.ts, w.alive())),
            Some((ts(9, 2), false))
        );
        same_in_every_order(&[delete(9, 2), create(5, 1, "a"), create(3, 2, "b")]);
        // The owner's delete older than its create does not kill it.
        let r = same_in_every_order(&[delete(2, 1), create(5, 1, "a")]);
        assert!(r.state().is_some_and(OwnedWrite::alive));
    }

    #[test]
    fn a_tombstone_keeps_the_claim() {
        let r = same_in_every_order(&[create(5, 1, "a"), delete(7, 1), create(9, 2, "b")]);
        assert_eq!(r.owner(), Some(Uuid::from_u128(1)));
        assert_eq!(
            r.state().map(|w| (w.ts, w.alive())),
            Some((ts(7, 1), false))
        );
        // The refused create is kept only as its device's latest op.
        assert_eq!(r.others().count(), 1);
        // The owner may create it again after its own delete.
        let r = same_in_every_order(&[create(5, 1, "a"), delete(7, 1), create(9, 1, "again")]);
        assert!(r.state().is_some_and(OwnedWrite::alive));
    }
}
