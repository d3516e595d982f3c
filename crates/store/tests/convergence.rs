//! Convergence under any delivery order: a proptest over random writes on 3 to 5
//! replicas, and the snapshot and prune paths.
//!
//! The proptest draws a seed and derives every choice from it; on failure proptest prints
//! the failing seed. Replay one with `MURMUR_SEED=<seed> cargo test -p murmur-store --test
//! convergence replay`.

use murmur_store::Origin;
use murmur_store::{Change, Store};
use murmur_testkit::store::*;
use murmur_testkit::{random_write, random_write_signed};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

fn ts_of(c: &Change) -> murmur_store::Hlc {
    c.op().ts()
}

/// Ops applied, and of them applied in place, over a case (so a test can check that both
/// the in-place and the general path ran, and agreed).
#[derive(Default)]
struct Paths {
    applied: usize,
    in_place: usize,
}

impl Paths {
    fn add(&mut self, r: murmur_store::ApplyReport) {
        self.applied += r.applied;
        self.in_place += r.in_place;
    }
}

async fn run_case(seed: u64) -> Paths {
    let mut paths = Paths::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(3..=5usize);
    let mut replicas: Vec<(Store, TempDir)> = Vec::new();
    for i in 0..n {
        replicas.push(store(i as u128 + 1).await);
    }
    // Every change made, and per replica the ones it has not received yet.
    let mut made: Vec<Change> = Vec::new();
    let mut inbox: Vec<Vec<Change>> = vec![Vec::new(); n];
    for _ in 0..rng.random_range(10..60) {
        let i = rng.random_range(0..n);
        if rng.random_bool(0.25) && !inbox[i].is_empty() {
            // Deliver part of the inbox now, so later writes build on remote rows.
            inbox[i].shuffle(&mut rng);
            let k = rng.random_range(1..=inbox[i].len());
            let batch: Vec<Change> = inbox[i].drain(..k).collect();
            paths.add(replicas[i].0.apply(batch).await.expect("apply"));
        }
        let changes = random_write(&replicas[i].0, &mut rng).await;
        for (j, ib) in inbox.iter_mut().enumerate() {
            if j != i {
                ib.extend(changes.iter().cloned());
            }
        }
        made.extend(changes);
    }
    // Deliver the rest in random order, in random batches, with random duplicates.
    for (i, ib) in inbox.iter_mut().enumerate() {
        let mut all: Vec<Change> = std::mem::take(ib);
        let dups: Vec<Change> = all
            .iter()
            .filter(|_| rng.random_bool(0.2))
            .cloned()
            .collect();
        all.extend(dups);
        all.shuffle(&mut rng);
        while !all.is_empty() {
            let k = rng.random_range(1..=all.len());
            let batch: Vec<Change> = all.drain(..k).collect();
            paths.add(replicas[i].0.apply(batch).await.expect("apply"));
        }
    }
    // A reference replica that gets every op in timestamp order.
    let (reference, _rd) = store(99).await;
    let mut ordered = made.clone();
    ordered.sort_by_key(ts_of);
    for c in ordered {
        paths.add(reference.apply(vec![c]).await.expect("apply"));
    }
    let want = reference.digest().await.unwrap();
    for (i, (s, _)) in replicas.iter().enumerate() {
        let got = s.digest().await.unwrap();
        assert_eq!(
            got,
            want,
            "replica {i} of {n} diverged (seed {seed}, {} changes)",
            made.len()
        );
        let vv = s.version_vector();
        assert!(!vv.has_gaps(), "replica {i} has gaps: {vv:?}");
    }
    // Each replica's log, which received ops out of order, in batches and twice, serves all
    // of them to a new replica (transitive sync), in pages that cut through its chunks.
    let i = rng.random_range(0..n);
    let (fresh, _df) = store(98).await;
    let limit = rng.random_range(1..=40usize);
    let mut cursor = murmur_store::OpsCursor::default();
    loop {
        let page = replicas[i]
            .0
            .ops_since(&murmur_store::VersionVector::default(), &cursor, limit)
            .await
            .expect("ops_since");
        paths.add(fresh.apply(page.changes).await.expect("apply"));
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(
        fresh.digest().await.unwrap(),
        want,
        "a replica fed from replica {i}'s log (pages of {limit}) diverged (seed {seed})"
    );
    // Derived data agrees too.
    let files = reference.files(None, 100).await.unwrap();
    for (s, _) in &replicas {
        assert_eq!(s.files(None, 100).await.unwrap(), files, "seed {seed}");
    }
    paths
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn replicas_converge_whatever_the_delivery_order(seed in any::<u64>()) {
        block_on(run_case(seed));
    }
}

#[test]
fn the_cases_take_both_the_in_place_and_the_general_path() {
    // The reference replica gets one op at a time in timestamp order (creates of new rows
    // and updates of live rows go in place); the others get shuffled batches, which mostly
    // fall back. Their digests are compared above, so both paths must agree.
    let mut total = Paths::default();
    for seed in 1..=4 {
        let p = block_on(run_case(seed));
        total.applied += p.applied;
        total.in_place += p.in_place;
    }
    assert!(total.in_place > 0, "no op went in place");
    assert!(
        total.in_place < total.applied,
        "every op went in place ({} of {})",
        total.in_place,
        total.applied
    );
}

#[test]
fn replay() {
    if let Ok(seed) = std::env::var("MURMUR_SEED") {
        let seed: u64 = seed.parse().expect("MURMUR_SEED must be a u64");
        block_on(run_case(seed));
    }
}

#[tokio::test]
async fn snapshot_then_later_ops_equals_every_op() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..80 {
        let s = if rng.random_bool(0.5) { &a } else { &b };
        let (ch, proofs) = random_write_signed(s, &mut rng).await;
        let other = if std::ptr::eq(s, &a) { &b } else { &a };
        other
            .apply_signed(ch, proofs, Origin::Gossip)
            .await
            .unwrap();
    }
    // New replica: snapshot of a, in small pages.
    let (c, _dc) = store(3).await;
    let covers = a.version_vector();
    let proofs = a.snapshot_proofs().await.unwrap();
    assert!(c.begin_snapshot(proofs.clone()).await.unwrap().is_empty());
    let mut pos = None;
    loop {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 7).await.unwrap();
        c.import_snapshot_page(rows).await.unwrap();
        match next {
            Some(p) => pos = Some(p),
            None => break,
        }
    }
    let _ = covers;
    assert!(c.finish_snapshot(proofs).await.unwrap().is_empty());
    assert_eq!(c.digest().await.unwrap(), a.digest().await.unwrap());
    // Later ops on a and b reach c through ops_since.
    let (mut later, mut proofs) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let s = if rng.random_bool(0.5) { &a } else { &b };
        let (ch, p) = random_write_signed(s, &mut rng).await;
        later.extend(ch);
        proofs.extend(p);
    }
    for s in [&a, &b] {
        let report = s
            .apply_signed(later.clone(), proofs.clone(), Origin::Gossip)
            .await
            .unwrap();
        // Each store counts its own author's ops as duplicates (it wrote them): nothing
        // is refused.
        assert!(report.rejected.is_empty(), "{report:?}");
    }
    let mut cursor = murmur_store::OpsCursor::default();
    let have = c.version_vector();
    loop {
        let page = a.ops_since(&have, &cursor, 5).await.unwrap();
        let report = c
            .apply_signed(page.changes, page.proofs, Origin::CatchUp)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{report:?}");
        match page.next {
            Some(n) => cursor = n,
            None => break,
        }
    }
    let want = a.digest().await.unwrap();
    assert_eq!(b.digest().await.unwrap(), want);
    assert_eq!(c.digest().await.unwrap(), want);
    assert_eq!(
        c.version_vector().contiguous_map(),
        a.version_vector().contiguous_map()
    );
}

#[tokio::test]
async fn merging_after_a_prune_equals_merging_without_it() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let (a2, _da2) = store(1).await; // same client as a, never pruned
    let mut rng = StdRng::seed_from_u64(11);
    let mut first = Vec::new();
    for _ in 0..40 {
        first.extend(random_write(&a, &mut rng).await);
    }
    a2.apply(first.clone()).await.unwrap();
    b.apply(first).await.unwrap();
    let horizon = a.version_vector().contiguous_map();
    let removed = a.prune(&horizon).await.unwrap();
    assert!(removed > 0);
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    // b now writes over the same rows; both a (pruned) and a2 (not) merge it.
    let mut second = Vec::new();
    for _ in 0..40 {
        second.extend(random_write(&b, &mut rng).await);
    }
    a.apply(second.clone()).await.unwrap();
    a2.apply(second).await.unwrap();
    assert_eq!(a.digest().await.unwrap(), a2.digest().await.unwrap());
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    // A peer behind the horizon is told to take a snapshot.
    assert!(a.needs_snapshot(&murmur_store::VersionVector::default()));
    assert!(!a.needs_snapshot(&a.version_vector()));
}
