//! The merge rules, as pure functions: from the current registers of a row and an op to the
//! new registers. No SQL here; [`crate::engine`] loads the registers, calls these, and stores
//! what changed.
//!
//! - Each property is a last-writer-wins register ordered by [`Hlc`] (time, then author).
//! - Row existence is a last-writer-wins register over create and delete. A create sets
//!   every column (missing ones to null) at its timestamp, so an update older than a delete
//!   can never show again: only a create newer than the delete revives the row, and it
//!   overwrites every older property. An update never changes existence.
//! - Owned rows: whole-row last-writer-wins, and only their owner's ops count.
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

/// The merge state of one owned row: a live row or a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedRowState {
    /// The row's owner.
    pub owner: Uuid,
    /// The timestamp of the op that last wrote or deleted it.
    pub ts: Hlc,
    /// Live row (true) or tombstone (false).
    pub alive: bool,
}

/// What to do with an owned write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedOutcome {
    /// Store it: it is the newest from the owner.
    Apply,
    /// Already superseded (or the same write again): change nothing.
    Ignore,
    /// The row is owned by another client: reject.
    NotOwner(Uuid),
}

/// Decides an owned row write (`alive = true`) or delete (`alive = false`) by `author` at
/// `ts`, given what is stored. A tombstone left by a client that never owned the row
/// (a forged delete) does not block the owner's row.
pub fn merge_owned(current: Option<OwnedRowState>, author: Uuid, ts: Hlc) -> OwnedOutcome {
    match current {
        None => OwnedOutcome::Apply,
        Some(cur) if cur.owner != author => {
            if cur.alive {
                OwnedOutcome::NotOwner(cur.owner)
            } else {
                OwnedOutcome::Apply
            }
        }
        Some(cur) if ts > cur.ts => OwnedOutcome::Apply,
        Some(_) => OwnedOutcome::Ignore,
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

    #[test]
    fn owned_rows_only_change_by_their_owner() {
        let owner = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let cur = Some(OwnedRowState {
            owner,
            ts: ts(5, 1),
            alive: true,
        });
        assert_eq!(
            merge_owned(cur, other, ts(9, 2)),
            OwnedOutcome::NotOwner(owner)
        );
        assert_eq!(merge_owned(cur, owner, ts(9, 1)), OwnedOutcome::Apply);
        assert_eq!(merge_owned(cur, owner, ts(5, 1)), OwnedOutcome::Ignore);
        assert_eq!(merge_owned(cur, owner, ts(4, 1)), OwnedOutcome::Ignore);
        let forged = Some(OwnedRowState {
            owner: other,
            ts: ts(9, 2),
            alive: false,
        });
        assert_eq!(merge_owned(forged, owner, ts(5, 1)), OwnedOutcome::Apply);
    }
}
