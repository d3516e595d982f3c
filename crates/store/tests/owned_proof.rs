//! An owned batch's rows are proven by its header: the header (in the author's signed
//! chain) commits to groups of row hashes, and a receiver checks every page of rows against
//! them before it applies any. A relay that adds, alters, drops or mixes rows, or that
//! skips groups, is refused (`bad_proof`) and nothing of its page is applied; a batch
//! whose rows were rewritten or deleted later still reaches a new device, through any
//! peer, and verifies.

use murmur_store::{
    Change, OpsCursor, OpsPage, Origin, OwnedRow, RejectReason, Store, Value, VersionVector,
};
use murmur_testkit::store::*;
use serde_json::json;
use sqlx::Row;

const RES: &str = "file_paths";

fn rows(n: usize, tag: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    (0..n)
        .map(|i| {
            json!({"materialized_path": format!("/{tag}/{i}"), "name": format!("{tag}{i}"), "size_bytes": i})
                .as_object()
                .cloned()
                .expect("an object")
        })
        .collect()
}

/// Every page `from` sends a store that has nothing, `limit` items at most.
async fn pages(from: &Store, limit: usize) -> Vec<OpsPage> {
    let mut out = Vec::new();
    let mut cursor = OpsCursor::default();
    loop {
        let page = from
            .ops_since(&VersionVector::default(), &cursor, limit)
            .await
            .expect("ops_since");
        let next = page.next.clone();
        out.push(page);
        match next {
            Some(n) => cursor = n,
            None => return out,
        }
    }
}

async fn apply(to: &Store, page: OpsPage) -> murmur_store::ApplyReport {
    to.apply_signed(page.changes, page.proofs, Origin::CatchUp)
        .await
        .expect("apply")
}

async fn count(s: &Store, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(s.pool())
        .await
        .expect("count")
        .get::<i64, _>(0)
}

/// The rows of the first `OwnedRows` of `page`, to tamper with.
fn rows_of(page: &mut OpsPage) -> &mut Vec<OwnedRow> {
    page.changes
        .iter_mut()
        .find_map(|c| match c {
            Change::OwnedRows { rows, .. } => Some(rows),
            Change::Op(_) => None,
        })
        .expect("a page of rows")
}

#[tokio::test]
async fn a_relay_cannot_add_alter_drop_or_mix_rows_of_a_batch() {
    let (a, _da) = store(1).await;
    let big = a.write_owned(RES, rows(600, "big")).await.expect("write");
    assert_eq!(big.ops[0].groups.len(), 3, "600 rows are 3 groups of 256");
    a.write_owned(RES, rows(10, "small")).await.expect("write");
    // Pages of one group each: 256, 256, then 88 rows and the small batch.
    let honest = pages(&a, 300).await;
    assert_eq!(honest.len(), 3);
    let other_rows: Vec<OwnedRow> = match &honest[2].changes[1] {
        Change::OwnedRows { rows, .. } => rows.clone(),
        Change::Op(_) => panic!("the small batch's rows"),
    };

    let (b, _db) = store(2).await;
    let mut forged: Vec<(&str, OpsPage)> = Vec::new();
    let mut added = honest[0].clone();
    let mut extra = rows_of(&mut added)[0].clone();
    extra.uuid = uuid::Uuid::now_v7();
    rows_of(&mut added).push(extra);
    forged.push(("a row added", added));
    let mut altered = honest[0].clone();
    rows_of(&mut altered)[7].values[1] = Value::Text("evil".into());
    forged.push(("a value changed", altered));
    let mut dropped = honest[0].clone();
    rows_of(&mut dropped).remove(100);
    forged.push(("a row dropped", dropped));
    let mut mixed = honest[0].clone();
    let r = rows_of(&mut mixed);
    r.pop();
    r.push(other_rows[0].clone());
    r.sort_by_key(|r| r.uuid);
    forged.push(("a row of another batch mixed in", mixed));
    // The last group alone, as if it ended the batch: groups 0 and 1 would never come.
    let run: Vec<_> = honest[2].changes.iter().map(|c| c.op().clone()).collect();
    assert_eq!(honest[2].proofs.len(), 1, "one run");
    forged.push((
        "groups skipped",
        OpsPage {
            changes: vec![honest[2].changes[0].clone()],
            proofs: vec![honest[2].proofs[0].narrow(&run, 0, 1)],
            next: None,
        },
    ));
    let mut early = honest[0].clone();
    if let Change::OwnedRows { last, .. } = &mut early.changes[0] {
        *last = true;
    }
    forged.push(("a batch ended early", early));
    let mut stripped = honest[0].clone();
    if let Change::OwnedRows { header, .. } = &mut stripped.changes[0] {
        header.groups.clear();
    }
    forged.push(("the header's groups stripped", stripped));

    let vv = b.version_vector();
    for (what, page) in forged {
        let report = apply(&b, page).await;
        assert_eq!(report.rows, 0, "{what}: nothing applied");
        assert!(
            report
                .rejected
                .iter()
                .any(|(_, r)| r.reason == RejectReason::BadProof),
            "{what}: refused as bad_proof, got {:?}",
            report.rejected
        );
        assert_eq!(
            count(&b, "SELECT COUNT(*) FROM file_paths").await,
            0,
            "{what}"
        );
        assert_eq!(b.version_vector(), vv, "{what}: the version vector stays");
    }

    // The honest pages still bring every row.
    for page in honest {
        let report = apply(&b, page).await;
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
    assert_eq!(count(&b, "SELECT COUNT(*) FROM file_paths").await, 610);
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_batch_rewritten_and_deleted_later_reaches_a_new_device_through_any_peer() {
    let (a, _da) = store(1).await;
    let first = a.write_owned(RES, rows(300, "first")).await.expect("write");
    let uuids = first.uuids.clone();
    // The owner rewrites some rows in a later batch and deletes others.
    let mut again = rows(5, "again");
    for (row, u) in again.iter_mut().zip(&uuids[10..15]) {
        row.insert("uuid".into(), json!(u.to_string()));
    }
    a.write_owned(RES, again).await.expect("rewrite");
    for u in &uuids[200..203] {
        a.delete_owned(RES, *u).await.expect("delete");
    }
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM crdt_owned_originals").await,
        8,
        "the first batch's values of the rows that left it are kept"
    );

    // A new device catches up from a, and a third from that one: every page verifies.
    let (b, _db) = store(2).await;
    let (c, _dc) = store(3).await;
    for (from, to) in [(&a, &b), (&b, &c)] {
        for page in pages(from, 100).await {
            let report = apply(to, page).await;
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        }
        assert_eq!(a.digest().await.unwrap(), to.digest().await.unwrap());
    }
    assert_eq!(count(&c, "SELECT COUNT(*) FROM file_paths").await, 297);

    // Pruning the log past the first batch forgets its kept values.
    let horizon = std::collections::BTreeMap::from([(a.author(), 1u64)]);
    a.prune(&horizon).await.expect("prune");
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM crdt_owned_originals").await,
        0
    );
}
