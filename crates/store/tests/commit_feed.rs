//! The commit feed: every committed change, whatever its origin, leaves the store as one
//! `Commit`, in commit order, and none is lost when its consumer falls behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use murmur_store::{COMMIT_FEED_CAP, Change, Commit, Origin, SnapshotPosition};
use murmur_testkit::ops::{changes, fields, tag};
use murmur_testkit::store::store;
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn next(feed: &mut mpsc::Receiver<Commit>) -> Commit {
    tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("a commit within the deadline")
        .expect("the feed is open")
}

#[tokio::test]
async fn every_origin_leaves_through_the_feed_in_commit_order() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let mut feed = b.commits();

    // A local write: its ops, to publish, and its row events.
    let local = b.create_shared("tags", None, tag("b1")).await.unwrap();
    let c = next(&mut feed).await;
    assert_eq!(c.origin, Origin::Local);
    assert_eq!(c.ops, local.ops);
    assert_eq!((c.applied, c.events.len()), (1, 1));
    assert!(!c.events[0].remote);

    // Owned rows written locally: the header to publish, the rows counted.
    let rows = (0..3)
        .map(|i| fields(json!({"name": format!("f{i}"), "cas_id": "c"})))
        .collect();
    let owned = b.write_owned("file_paths", rows).await.unwrap();
    let c = next(&mut feed).await;
    assert_eq!((c.origin, c.ops.len(), c.rows), (Origin::Local, 1, 3));
    assert_eq!(c.ops, owned.ops);

    // Remote ops, from gossip and from a catch-up; a second copy is counted, not applied.
    let w1 = a.create_shared("tags", None, tag("a1")).await.unwrap();
    let w2 = a.create_shared("tags", None, tag("a2")).await.unwrap();
    b.apply_from(changes(&w1.ops), Origin::Gossip)
        .await
        .unwrap();
    let c = next(&mut feed).await;
    assert_eq!(
        (c.origin, c.applied, c.events.len()),
        (Origin::Gossip, 1, 1)
    );
    assert!(c.ops.is_empty(), "remote ops are not published again");
    assert!(c.events[0].remote);
    let mut batch = changes(&w1.ops);
    batch.extend(changes(&w2.ops));
    b.apply(batch).await.unwrap();
    let c = next(&mut feed).await;
    assert_eq!((c.origin, c.applied, c.duplicates), (Origin::CatchUp, 1, 1));

    // A batch that commits nothing is still reported, so what it refused is counted.
    let mut bad = w2.ops[0].clone();
    bad.resource = "no_such_resource".into();
    // (An op of an unknown resource is kept for a newer schema; one without a row is not.)
    bad.uuid = None;
    bad.seq = 99;
    b.apply(vec![Change::Op(bad)]).await.unwrap();
    let c = next(&mut feed).await;
    assert_eq!((c.applied, c.rejected.len()), (0, 1));
    assert_eq!(c.rejected[0].1.label(), "unknown_resource");

    // A snapshot page and the end of the import.
    let (page, _) = a
        .snapshot_page(None::<&SnapshotPosition>, 100)
        .await
        .unwrap();
    let n = page.len();
    b.import_snapshot_page(page).await.unwrap();
    let c = next(&mut feed).await;
    assert_eq!((c.origin, c.imported), (Origin::Snapshot, n));
    b.finish_snapshot(a.snapshot_proofs().await.unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut feed).await.origin, Origin::Snapshot);

    // Pruning.
    let horizon: BTreeMap<_, _> = b.version_vector().contiguous_map();
    let pruned = b.prune(&horizon).await.unwrap();
    assert!(pruned > 0);
    let c = next(&mut feed).await;
    assert_eq!((c.origin, c.pruned), (Origin::Prune, pruned));

    // Client-pool bookkeeping is no change of the library: nothing on the feed.
    b.touch_client(a.client(), Some("peer")).await.unwrap();
    b.create_shared("tags", None, tag("b2")).await.unwrap();
    assert_eq!(next(&mut feed).await.origin, Origin::Local);
    assert!(feed.try_recv().is_err());
}

#[tokio::test]
async fn a_consumer_that_falls_behind_loses_no_commit() {
    let (s, _d) = store(3).await;
    let mut feed = s.commits();
    // More writes than the feed holds, from a task of their own, while nothing is taken
    // until the feed is full: the writers wait for room instead of dropping commits.
    let n = COMMIT_FEED_CAP + 200;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (s, written) = (s.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..n {
                s.create_shared("tags", None, tag(&format!("t{i}")))
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while written.load(Ordering::SeqCst) < COMMIT_FEED_CAP {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never filled"
        );
        tokio::task::yield_now().await;
    }
    // Full: the next write has committed and waits for room, for as long as nothing is
    // taken (watched here for a while: a feed that dropped commits would let it run on).
    let watch_until = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(written.load(Ordering::SeqCst), COMMIT_FEED_CAP);
        tokio::task::yield_now().await;
    }
    let mut seqs = Vec::with_capacity(n);
    while seqs.len() < n {
        let c = next(&mut feed).await;
        seqs.extend(c.ops.iter().map(|op| op.seq));
    }
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=n as u64).collect();
    assert_eq!(seqs, expected, "every commit once, in commit order");
}

#[tokio::test]
async fn without_a_consumer_writes_go_on() {
    let (s, _d) = store(4).await;
    // Nobody subscribed: nothing is queued, so nothing can fill up.
    for i in 0..COMMIT_FEED_CAP + 10 {
        s.create_shared("tags", None, tag(&format!("t{i}")))
            .await
            .unwrap();
    }
    // A consumer that went away does not stop writes either.
    drop(s.commits());
    for i in 0..COMMIT_FEED_CAP + 10 {
        s.create_shared("tags", None, tag(&format!("u{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        s.count_rows("tags").await.unwrap() as usize,
        2 * (COMMIT_FEED_CAP + 10)
    );
}
