//! `files` is kept up to date incrementally (new paths add to their file; replaced or
//! deleted ones make it be recounted): after any mix of writes it must equal a recount of
//! `file_paths` from scratch, on the writer and on a replica.

use murmur_store::Store;
use murmur_testkit::ops::*;
use murmur_testkit::store::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as J, json};
use sqlx::Row;
use uuid::Uuid;

async fn triples(s: &Store, sql: &'static str) -> Vec<(String, Option<i64>, i64)> {
    sqlx::query(sql)
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn files_match_a_recount(s: &Store, step: usize) {
    let stored = triples(
        s,
        "SELECT cas_id, size_bytes, path_count FROM files ORDER BY cas_id",
    )
    .await;
    let recount = triples(
        s,
        "SELECT cas_id, MAX(size_bytes), COUNT(*) FROM file_paths WHERE cas_id IS NOT NULL \
         GROUP BY cas_id ORDER BY cas_id",
    )
    .await;
    assert_eq!(
        stored, recount,
        "files differ from a recount after step {step}"
    );
}

#[tokio::test]
async fn files_equal_a_recount_after_random_writes() {
    let seed: u64 = std::env::var("MURMUR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("MURMUR_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let mut live: Vec<Uuid> = Vec::new();
    let size = |rng: &mut StdRng| -> J {
        if rng.random_bool(0.2) {
            J::Null
        } else {
            json!(rng.random_range(1..100))
        }
    };
    for step in 0..40 {
        match rng.random_range(0..3) {
            // New rows, some sharing a file, some without one.
            0 | 1 => {
                let n = rng.random_range(1..8);
                let rows = (0..n)
                    .map(|_| {
                        let cas = if rng.random_bool(0.1) {
                            J::Null
                        } else {
                            json!(format!("c{}", rng.random_range(0..6)))
                        };
                        fields(json!({"cas_id": cas, "size_bytes": size(&mut rng)}))
                    })
                    .collect();
                live.extend(a.write_owned("file_paths", rows).await.unwrap().uuids);
            }
            // Rewrite existing rows (new file or size) or delete one.
            _ if !live.is_empty() => {
                let i = rng.random_range(0..live.len());
                if rng.random_bool(0.5) {
                    let uuid = live.swap_remove(i);
                    a.delete_owned("file_paths", uuid).await.unwrap();
                } else {
                    let cas = format!("c{}", rng.random_range(0..6));
                    let row = json!({"uuid": live[i].to_string(), "cas_id": cas,
                                     "size_bytes": size(&mut rng)});
                    a.write_owned("file_paths", vec![fields(row)])
                        .await
                        .unwrap();
                }
            }
            _ => {}
        }
        files_match_a_recount(&a, step).await;
    }
    b.apply(all_changes(&a).await).await.unwrap();
    files_match_a_recount(&b, 40).await;
}
