//! Helpers shared by the store's tests.
#![allow(dead_code)]

use std::time::Duration;

use murmur_store::{Change, ManualClock, Op, PhysicalClock, Store, StoreOptions};
use serde_json::{Map, Value as J, json};
use tempfile::TempDir;
use uuid::Uuid;

/// A store in a temp dir (kept alive by the returned TempDir).
pub async fn store(n: u128) -> (Store, TempDir) {
    store_with(n, PhysicalClock::System).await
}

pub async fn store_with(n: u128, clock: PhysicalClock) -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut o = StoreOptions::new(dir.path().join("lib.db"), Uuid::from_u128(n));
    o.clock = clock;
    o.max_drift = Duration::from_millis(100);
    o.durability = murmur_store::Durability::Normal;
    (Store::open(o).await.expect("open store"), dir)
}

pub fn manual() -> ManualClock {
    ManualClock::new().expect("a free manual clock slot")
}

pub fn fields(v: J) -> Map<String, J> {
    match v {
        J::Object(m) => m,
        _ => panic!("fields must be an object"),
    }
}

pub fn tag(name: &str) -> Map<String, J> {
    fields(json!({"name": name, "color": "red"}))
}

pub fn changes(ops: &[Op]) -> Vec<Change> {
    ops.iter().cloned().map(Change::Op).collect()
}

/// Every op a store authored or holds, in (author, seq) order, with owned batches expanded.
pub async fn all_changes(s: &Store) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cursor = murmur_store::OpsCursor::default();
    loop {
        let page = s
            .ops_since(&murmur_store::VersionVector::default(), &cursor, 1000)
            .await
            .expect("ops_since");
        out.extend(page.changes);
        match page.next {
            Some(n) => cursor = n,
            None => return out,
        }
    }
}
