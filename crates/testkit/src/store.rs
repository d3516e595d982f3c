//! Stores for the store's own tests: one in a temp dir, a manual physical clock, and
//! everything a store holds read back as changes.

use std::time::Duration;

use libp2p_identity::ed25519;
use murmur_store::proof::Proof;
use murmur_store::{
    Change, Durability, ManualClock, OpsCursor, PhysicalClock, Store, StoreOptions, VersionVector,
};
use tempfile::TempDir;

/// The device key of test device `n`: the same for the same `n`, so reopening a store
/// of device `n` is the same device (under a new author).
pub fn device_key(n: u128) -> ed25519::Keypair {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&n.to_be_bytes());
    seed[16] = 0x6d;
    let secret = ed25519::SecretKey::try_from_bytes(seed).expect("32 bytes");
    ed25519::Keypair::from(secret)
}

/// A store of device `n` in a temp dir (kept alive by the returned TempDir).
pub async fn store(n: u128) -> (Store, TempDir) {
    store_with(n, PhysicalClock::System).await
}

/// [`store`] on the physical clock `clock`.
pub async fn store_with(n: u128, clock: PhysicalClock) -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut o = StoreOptions::new(dir.path().join("lib.db"), device_key(n));
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
    all_signed(s).await.0
}

/// [`all_changes`] with the proofs of every page.
pub async fn all_signed(s: &Store) -> (Vec<Change>, Vec<Proof>) {
    let mut out = Vec::new();
    let mut proofs = Vec::new();
    let mut cursor = OpsCursor::default();
    loop {
        let page = s
            .ops_since(&VersionVector::default(), &cursor, 1000)
            .await
            .expect("ops_since");
        out.extend(page.changes);
        proofs.extend(page.proofs);
        match page.next {
            Some(n) => cursor = n,
            None => return (out, proofs),
        }
    }
}
