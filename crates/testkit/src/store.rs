//! Stores for the store's own tests: one in a temp dir, a manual physical clock, and
//! everything a store holds read back as changes.

use std::time::Duration;

use murmur_store::{
    Change, Durability, ManualClock, OpsCursor, PhysicalClock, Store, StoreOptions, VersionVector,
};
use tempfile::TempDir;
use uuid::Uuid;

/// A store of client `n` in a temp dir (kept alive by the returned TempDir).
pub async fn store(n: u128) -> (Store, TempDir) {
    store_with(n, PhysicalClock::System).await
}

/// [`store`] on the physical clock `clock`.
pub async fn store_with(n: u128, clock: PhysicalClock) -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut o = StoreOptions::new(dir.path().join("lib.db"), Uuid::from_u128(n));
    o.clock = clock;
    o.max_drift = Duration::from_millis(100);
    o.durability = Durability::Normal;
    (Store::open(o).await.expect("open store"), dir)
}

/// A manual physical clock.
pub fn manual() -> ManualClock {
    ManualClock::new().expect("a free manual clock slot")
}

/// Every op a store authored or holds, in (author, seq) order, with owned batches expanded.
pub async fn all_changes(s: &Store) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cursor = OpsCursor::default();
    loop {
        let page = s
            .ops_since(&VersionVector::default(), &cursor, 1000)
            .await
            .expect("ops_since");
        out.extend(page.changes);
        match page.next {
            Some(n) => cursor = n,
            None => return out,
        }
    }
}
