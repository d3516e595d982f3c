//! The maintained digest: it equals the one recomputed from every row after any sequence
//! of writes, deliveries, folds and snapshot imports (a proptest); two stores find the one
//! row they differ on out of 100k by key ranges; a write by another program is refused by
//! SQLite itself; a row changed behind murmur's back is found and repaired.
//!
//! The proptest draws a seed; on failure proptest prints it. Replay one with
//! `MURMUR_SEED=<seed> cargo test -p murmur-store --test digest replay`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use murmur_store::digest::{Fingerprint, Ranges, compare, row_hash, row_live};
use murmur_store::{Change, SnapshotRow, Store};
use murmur_testkit::behind::{corrupt, foreign_read, foreign_write};
use murmur_testkit::store::*;
use murmur_testkit::{fields, random_write};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

/// Every resource's fingerprint, recomputed from the rows a full snapshot reads.
async fn recomputed(s: &Store) -> BTreeMap<String, Fingerprint> {
    let mut out: BTreeMap<String, Fingerprint> = s
        .registry()
        .iter()
        .map(|d| (d.name.clone(), Fingerprint::default()))
        .collect();
    let mut pos = None;
    loop {
        let (rows, next) = s.snapshot_page(pos.as_ref(), 1000).await.unwrap();
        for r in &rows {
            let resource = match r {
                SnapshotRow::Shared { resource, .. }
                | SnapshotRow::Owned { resource, .. }
                | SnapshotRow::OwnedTombstone { resource, .. } => resource.clone(),
            };
            out.get_mut(&resource)
                .unwrap()
                .add_row(&row_hash(r), row_live(r));
        }
        match next {
            Some(p) => pos = Some(p),
            None => return out,
        }
    }
}

/// Checks the maintained fingerprints against the recomputed ones, and that a resource's
/// ranges add up to it.
async fn check(s: &Store, what: &str) {
    let want = recomputed(s).await;
    let got: BTreeMap<String, Fingerprint> = s
        .resource_fingerprints()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, want, "{what}: maintained != recomputed");
    for (resource, fp) in &want {
        let Ranges::Ranges(parts) = s.range(resource, "").await.unwrap() else {
            panic!("{what}: the top of a resource lists ranges");
        };
        let mut sum = Fingerprint::default();
        for p in &parts {
            sum.merge(&p.fingerprint);
        }
        assert_eq!(&sum, fp, "{what}: the ranges of {resource} add up to it");
    }
}

async fn run_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(2..=3usize);
    let mut replicas: Vec<(Store, TempDir)> = Vec::new();
    for i in 0..n {
        replicas.push(store(i as u128 + 1).await);
    }
    let mut inbox: Vec<Vec<Change>> = vec![Vec::new(); n];
    // Every change written, for a new replica that has some of them before its snapshot.
    let mut written: Vec<Change> = Vec::new();
    for step in 0..rng.random_range(10..50) {
        let i = rng.random_range(0..n);
        if rng.random_bool(0.25) && !inbox[i].is_empty() {
            inbox[i].shuffle(&mut rng);
            let k = rng.random_range(1..=inbox[i].len());
            let batch: Vec<Change> = inbox[i].drain(..k).collect();
            replicas[i].0.apply(batch).await.expect("apply");
        }
        let changes = random_write(&replicas[i].0, &mut rng).await;
        written.extend(changes.iter().cloned());
        for (j, ib) in inbox.iter_mut().enumerate() {
            if j != i {
                ib.extend(changes.iter().cloned());
            }
        }
        // Part of what is dirty folded now, the rest later (or by the digest).
        if rng.random_bool(0.3) {
            let j = rng.random_range(0..n);
            replicas[j]
                .0
                .fold_digest(rng.random_range(1..4))
                .await
                .unwrap();
        }
        if rng.random_bool(0.15) {
            let j = rng.random_range(0..n);
            check(
                &replicas[j].0,
                &format!("seed {seed} step {step} replica {j}"),
            )
            .await;
        }
    }
    for (i, ib) in inbox.iter_mut().enumerate() {
        let mut all = std::mem::take(ib);
        all.shuffle(&mut rng);
        while !all.is_empty() {
            let k = rng.random_range(1..=all.len());
            let batch: Vec<Change> = all.drain(..k).collect();
            replicas[i].0.apply(batch).await.expect("apply");
        }
    }
    let want = replicas[0].0.digest().await.unwrap();
    for (i, (s, _)) in replicas.iter().enumerate() {
        check(s, &format!("seed {seed} replica {i} at the end")).await;
        assert_eq!(s.digest().await.unwrap(), want, "seed {seed} replica {i}");
    }
    // A new replica from a snapshot, in pages of a random size, folding in between. Half
    // the time some of the ops reach it once the join began (gossip during the join, its
    // authors known from the snapshot's proofs): the snapshot's rows then meet rows it
    // has, as well as rows new to it.
    let (fresh, _df) = store(50).await;
    let from = &replicas[rng.random_range(0..n)].0;
    let proofs = from.snapshot_proofs().await.unwrap();
    fresh.begin_snapshot(proofs.clone()).await.unwrap();
    if rng.random_bool(0.5) {
        written.shuffle(&mut rng);
        let k = rng.random_range(0..=written.len());
        let early: Vec<Change> = written.drain(..k).collect();
        if !early.is_empty() {
            fresh.apply(early).await.expect("apply during the join");
        }
    }
    let limit = rng.random_range(1..20usize);
    let mut pos = None;
    loop {
        let (rows, next) = from.snapshot_page(pos.as_ref(), limit).await.unwrap();
        fresh.import_snapshot_page(rows).await.unwrap();
        if rng.random_bool(0.3) {
            fresh.fold_digest(rng.random_range(1..4)).await.unwrap();
        }
        match next {
            Some(p) => pos = Some(p),
            None => break,
        }
    }
    fresh.finish_snapshot(proofs).await.unwrap();
    check(&fresh, &format!("seed {seed} snapshot replica")).await;
    assert_eq!(fresh.digest().await.unwrap(), want, "seed {seed} snapshot");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn the_maintained_digest_equals_the_recomputed_one(seed in any::<u64>()) {
        block_on(run_case(seed));
    }
}

#[test]
fn replay() {
    if let Ok(seed) = std::env::var("MURMUR_SEED") {
        block_on(run_case(seed.parse().expect("MURMUR_SEED must be a u64")));
    }
}

/// Descends the ranges of `resource` where `a` and `b` differ; returns the differing rows
/// and how many range listings each side was asked for.
async fn diff(a: &Store, b: &Store, resource: &str) -> (Vec<Uuid>, usize) {
    let mut todo = vec![String::new()];
    let (mut rows, mut calls) = (Vec::new(), 0);
    while let Some(p) = todo.pop() {
        let (ra, rb) = (
            a.range(resource, &p).await.unwrap(),
            b.range(resource, &p).await.unwrap(),
        );
        calls += 1;
        let c = compare(&ra, &rb);
        todo.extend(c.descend);
        rows.extend(c.rows);
    }
    (rows, calls)
}

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("lib.db")
}

#[tokio::test]
async fn two_stores_differing_in_one_row_of_100k_find_it_by_ranges() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let mut rng = StdRng::seed_from_u64(20);
    let mut uuids = Vec::new();
    for _ in 0..20 {
        let rows = (0..5_000)
            .map(|i| {
                let u = Uuid::from_u128(rng.random::<u128>() & !(0xf << 76) | (4 << 76));
                uuids.push(u);
                fields(json!({"uuid": u.to_string(), "name": format!("f{i}"),
                    "cas_id": format!("cas-{}", i / 2), "size_bytes": i}))
            })
            .collect();
        a.write_owned("file_paths", rows).await.unwrap();
    }
    let proofs = a.snapshot_proofs().await.unwrap();
    b.begin_snapshot(proofs.clone()).await.unwrap();
    let mut pos = None;
    loop {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 5_000).await.unwrap();
        b.import_snapshot_page(rows).await.unwrap();
        match next {
            Some(p) => pos = Some(p),
            None => break,
        }
    }
    b.finish_snapshot(proofs).await.unwrap();
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    assert_eq!(a.digest().await.unwrap().rows, 100_000);
    // One row rewritten on a only.
    let changed = uuids[rng.random_range(0..uuids.len())];
    a.write_owned(
        "file_paths",
        vec![fields(
            json!({"uuid": changed.to_string(), "name": "moved"}),
        )],
    )
    .await
    .unwrap();
    assert_ne!(a.digest().await.unwrap(), b.digest().await.unwrap());
    let (rows, calls) = diff(&a, &b, "file_paths").await;
    assert_eq!(rows, vec![changed]);
    // One listing per level: the resource, 2 digits, 4 digits (rows at 100k).
    assert!(calls <= 4, "{calls} listings");
    // No other resource differs.
    let (ra, rb) = (
        a.resource_fingerprints().await.unwrap(),
        b.resource_fingerprints().await.unwrap(),
    );
    let differ: Vec<&str> = ra
        .iter()
        .zip(&rb)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert_eq!(differ, vec!["file_paths"]);
}

#[tokio::test]
async fn another_programs_write_to_a_synced_table_is_refused_by_sqlite() {
    let (a, dir) = store(1).await;
    let u = a
        .create_shared(
            "tags",
            None,
            fields(json!({"name": "kept", "color": "red"})),
        )
        .await
        .unwrap()
        .uuids[0];
    let before = a.digest().await.unwrap();
    let key = u.hyphenated().to_string();
    for sql in [
        format!("UPDATE tags SET name = 'other' WHERE uuid = '{key}'"),
        format!("DELETE FROM tags WHERE uuid = '{key}'"),
        "INSERT INTO tags (uuid, crdt_clock, name) VALUES ('x', x'', 'n')".to_owned(),
        "DELETE FROM crdt_rows".to_owned(),
        "INSERT INTO file_paths (uuid, owner, crdt_ts, crdt_seq) VALUES ('x', 'o', x'', 1)"
            .to_owned(),
    ] {
        let err = foreign_write(&db(&dir), &sql)
            .await
            .expect_err("another program's write must fail");
        assert!(
            err.contains("no such collation sequence: murmur_writer"),
            "{sql}: {err}"
        );
    }
    // Reads by other programs work.
    assert_eq!(
        foreign_read(
            &db(&dir),
            &format!("SELECT name FROM tags WHERE uuid = '{key}'")
        )
        .await,
        Some("kept".to_owned())
    );
    assert_eq!(a.digest().await.unwrap(), before);
    // And murmur's own writes still go.
    a.update_shared("tags", u, fields(json!({"name": "renamed"})))
        .await
        .unwrap();
    assert_ne!(a.digest().await.unwrap(), before);
}

#[tokio::test]
async fn a_row_changed_behind_murmurs_back_is_found_and_repaired() {
    let (a, _da) = store(1).await;
    let (b, db_b) = store(2).await;
    let t = a
        .create_shared(
            "tags",
            None,
            fields(json!({"name": "right", "color": "red"})),
        )
        .await
        .unwrap();
    let f = a
        .write_owned(
            "file_paths",
            vec![fields(
                json!({"name": "right", "cas_id": "c1", "size_bytes": 3}),
            )],
        )
        .await
        .unwrap();
    let (tag, file) = (t.uuids[0], f.uuids[0]);
    let (changes, proofs) = all_signed(&a).await;
    b.apply_signed(changes, proofs, murmur_store::Origin::CatchUp)
        .await
        .unwrap();
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    // b's copies are changed behind murmur's back: values only, registers untouched.
    for sql in [
        format!("UPDATE tags SET name = 'wrong' WHERE uuid = '{tag}'"),
        format!("UPDATE file_paths SET name = 'wrong' WHERE uuid = '{file}'"),
    ] {
        assert_eq!(corrupt(&db(&db_b), &sql).await, 1);
    }
    assert_ne!(a.digest().await.unwrap(), b.digest().await.unwrap());
    let mut found = Vec::new();
    for resource in ["tags", "file_paths"] {
        let (rows, _) = diff(&a, &b, resource).await;
        found.push((resource, rows));
    }
    assert_eq!(found, vec![("tags", vec![tag]), ("file_paths", vec![file])]);
    // Each side sends its rows; each merges the other's. a wrote both ops, so its values
    // win the ties on both sides.
    for (resource, rows) in &found {
        let (from_a, _) = a.rows_by_uuid(resource, rows).await.unwrap();
        let (from_b, _) = b.rows_by_uuid(resource, rows).await.unwrap();
        let rb = b.repair(from_a, a.client()).await.unwrap();
        assert_eq!(rb.repaired.len(), 1, "{resource}: {rb:?}");
        let ra = a.repair(from_b, b.client()).await.unwrap();
        assert!(ra.repaired.is_empty(), "{resource}: {ra:?}");
    }
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    let name = b.get_row("tags", tag).await.unwrap().unwrap();
    assert_eq!(name["name"], "right");
}

#[tokio::test]
async fn a_repair_cannot_change_another_devices_writes() {
    let (a, _da) = store(1).await;
    let (c, _dc) = store(3).await;
    let t = a
        .create_shared(
            "tags",
            None,
            fields(json!({"name": "right", "color": "red"})),
        )
        .await
        .unwrap();
    let tag = t.uuids[0];
    let (changes, proofs) = all_signed(&a).await;
    c.apply_signed(changes, proofs, murmur_store::Origin::CatchUp)
        .await
        .unwrap();
    let before = c.digest().await.unwrap();
    // Device 2 sends c a's row with a newer register of a's author, and one with a's
    // register at the same time but another value: neither is device 2's write.
    let (rows, _) = a.rows_by_uuid("tags", &[tag]).await.unwrap();
    let forged: Vec<SnapshotRow> = rows
        .into_iter()
        .flat_map(|r| {
            let SnapshotRow::Shared {
                resource,
                uuid,
                exists_ts,
                alive,
                props,
            } = r
            else {
                panic!("a shared row");
            };
            let tie: Vec<_> = props
                .iter()
                .map(|(n, ts, _)| (n.clone(), *ts, murmur_store::Value::Text("evil".into())))
                .collect();
            let mut newer_ts = exists_ts;
            newer_ts.time += 1;
            let newer: Vec<_> = props
                .iter()
                .map(|(n, _, _)| {
                    (
                        n.clone(),
                        newer_ts,
                        murmur_store::Value::Text("evil".into()),
                    )
                })
                .collect();
            [
                SnapshotRow::Shared {
                    resource: resource.clone(),
                    uuid,
                    exists_ts,
                    alive,
                    props: tie,
                },
                SnapshotRow::Shared {
                    resource,
                    uuid,
                    exists_ts: newer_ts,
                    alive,
                    props: newer,
                },
            ]
        })
        .collect();
    let report = c.repair(forged, device_uuid(2)).await.unwrap();
    assert!(report.repaired.is_empty(), "{report:?}");
    assert_eq!(report.refused, 2);
    assert_eq!(c.digest().await.unwrap(), before);
    assert_eq!(
        c.get_row("tags", tag).await.unwrap().unwrap()["name"],
        "right"
    );
}

fn device_uuid(n: u128) -> Uuid {
    murmur_store::proof::device_uuid(&device_key(n).public())
}

/// A page whose owned rows come twice (a peer's bug, or a page sent again after a lost
/// answer) and a page imported twice change nothing the second time: one row each, and
/// the maintained digest is the recomputed one and the source's.
#[tokio::test]
async fn owned_rows_that_come_twice_in_a_snapshot_are_held_once() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let rows = (0..300)
        .map(|i| {
            fields(json!({"uuid": Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 + i * 7919).to_string(),
                "name": format!("f{i}"), "cas_id": format!("cas-{}", i / 2), "size_bytes": i as i64}))
        })
        .collect();
    a.write_owned("file_paths", rows).await.unwrap();
    let proofs = a.snapshot_proofs().await.unwrap();
    b.begin_snapshot(proofs.clone()).await.unwrap();
    let (page, next) = a.snapshot_page(None, 10_000).await.unwrap();
    assert!(next.is_none());
    let mut doubled = page.clone();
    doubled.extend(page.clone());
    doubled.shuffle(&mut StdRng::seed_from_u64(7));
    b.import_snapshot_page(doubled).await.unwrap();
    b.import_snapshot_page(page).await.unwrap();
    b.finish_snapshot(proofs).await.unwrap();
    check(&b, "rows twice").await;
    assert_eq!(b.count_rows("file_paths").await.unwrap(), 300);
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

/// A library whose digest triggers are of an older form (written by an earlier version, as
/// after an upgrade): the store replaces them when it opens, and the digest it maintains
/// over the rows written before and after is still the recomputed one.
#[tokio::test]
async fn digest_triggers_of_an_older_version_are_replaced_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let mut o = murmur_store::StoreOptions::new(dir.path().join("lib.db"), device_key(1));
        o.durability = murmur_store::Durability::Normal;
        Store::open(o).await.expect("open store")
    };
    let trigger = "SELECT sql FROM sqlite_master WHERE name = 'tags_digest_i'";
    let a = open().await;
    a.create_shared(
        "tags",
        None,
        fields(json!({"name": "before", "color": "red"})),
    )
    .await
    .unwrap();
    a.close().await;
    // The form of 2026-12-03: an INSERT ... SELECT from the marks themselves.
    let db = dir.path().join("lib.db");
    corrupt(&db, "DROP TRIGGER tags_digest_i").await;
    corrupt(
        &db,
        "CREATE TRIGGER tags_digest_i AFTER INSERT ON tags BEGIN \
         INSERT INTO crdt_digest_dirty (resource, bucket) \
         SELECT 'tags', substr(NEW.uuid, 1, 5) WHERE 'm' = 'm' COLLATE murmur_writer \
         AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = 'tags' \
         AND bucket IN ('', substr(NEW.uuid, 1, 5))); END",
    )
    .await;
    let old = foreign_read(&db, trigger).await.unwrap();
    assert!(!old.contains("WHEN NOT EXISTS"), "{old}");
    let b = open().await;
    let new = foreign_read(&db, trigger).await.unwrap();
    assert!(new.contains("WHEN NOT EXISTS"), "{new}");
    for i in 0..50 {
        b.create_shared(
            "tags",
            None,
            fields(json!({"name": format!("after {i}"), "color": "blue"})),
        )
        .await
        .unwrap();
    }
    check(&b, "after the upgrade").await;
    assert_eq!(b.digest().await.unwrap().rows, 51);
    // Another program's insert is still refused by SQLite itself.
    let err = foreign_write(
        &db,
        "INSERT INTO tags (uuid, crdt_clock, name) VALUES ('x', x'', 'n')",
    )
    .await
    .expect_err("another program's write must fail");
    assert!(err.contains("no such collation sequence"), "{err}");
}
