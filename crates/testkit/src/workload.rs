//! Random workloads for tests and benchmarks: one random local write at a time, on the
//! default library (creates, updates, deletes, relations, owned batches and deletes), built
//! on the rows the store holds so that writes land on rows other replicas made.

use murmur_store::proof::Proof;
use murmur_store::{Change, Store};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::json;
use uuid::Uuid;

use crate::ops::fields;

const CAS: [&str; 4] = ["cas-a", "cas-b", "cas-c", "cas-d"];

async fn some_row(s: &Store, resource: &str, rng: &mut StdRng, own: bool) -> Option<Uuid> {
    let owner = own.then(|| s.client());
    let rows = s.list_rows(resource, owner, None, 1000).await.ok()?;
    let r = rows.choose(rng)?;
    r["uuid"].as_str().and_then(|u| Uuid::parse_str(u).ok())
}

/// One random local write on `s`; returns the changes it committed (none when it found
/// nothing to act on, or the store refused it, e.g. a relation that exists already).
pub async fn random_write(s: &Store, rng: &mut StdRng) -> Vec<Change> {
    random_write_signed(s, rng).await.0
}

/// [`random_write`] with the proofs of its ops, as a peer receives them.
pub async fn random_write_signed(s: &Store, rng: &mut StdRng) -> (Vec<Change>, Vec<Proof>) {
    let shared = ["tags", "albums", "comments", "jobs"];
    let res = match rng.random_range(0..10) {
        0 | 1 => {
            let r = shared.choose(rng).copied().unwrap_or("tags");
            let f = match r {
                "tags" => {
                    json!({"name": format!("t{}", rng.random_range(0..100)), "color": "blue"})
                }
                "albums" => json!({"name": "a", "is_hidden": rng.random_bool(0.5)}),
                "comments" => {
                    json!({"content": "c", "cas_id": CAS.choose(rng).copied().unwrap_or_default()})
                }
                _ => json!({"name": "j", "status": "queued"}),
            };
            s.create_shared(r, None, fields(f)).await
        }
        2..=4 => {
            let r = shared.choose(rng).copied().unwrap_or("tags");
            let Some(u) = some_row(s, r, rng, false).await else {
                return Default::default();
            };
            let f = match r {
                "tags" => json!({"color": format!("c{}", rng.random_range(0..1000))}),
                "albums" => {
                    json!({"is_hidden": rng.random_bool(0.5), "name": format!("n{}", rng.random_range(0..1000))})
                }
                "comments" => json!({"content": format!("x{}", rng.random_range(0..1000))}),
                _ => json!({"status": format!("s{}", rng.random_range(0..1000))}),
            };
            s.update_shared(r, u, fields(f)).await
        }
        5 => {
            let r = shared.choose(rng).copied().unwrap_or("tags");
            let Some(u) = some_row(s, r, rng, false).await else {
                return Default::default();
            };
            s.delete_shared(r, u).await
        }
        6 => {
            // A relation; the same (tag, file) on two replicas makes one row.
            let Some(t) = some_row(s, "tags", rng, false).await else {
                return Default::default();
            };
            let f = json!({"tag_uuid": t.to_string(), "cas_id": CAS.choose(rng).copied().unwrap_or_default()});
            match rng.random_bool(0.7) {
                true => s.create_shared("tags_on_files", None, fields(f)).await,
                false => match some_row(s, "tags_on_files", rng, false).await {
                    Some(u) => s.delete_shared("tags_on_files", u).await,
                    None => return Default::default(),
                },
            }
        }
        7 | 8 => {
            // An owned batch: new rows and maybe a rewrite of one of ours.
            let mut rows = Vec::new();
            for i in 0..rng.random_range(1..5) {
                rows.push(fields(json!({
                    "name": format!("f{i}"), "cas_id": CAS.choose(rng).copied().unwrap_or_default(),
                    "size_bytes": rng.random_range(0..100), "materialized_path": "/p/"
                })));
            }
            if let Some(u) = some_row(s, "file_paths", rng, true).await {
                rows.push(fields(json!({"uuid": u.to_string(), "name": "rewritten", "cas_id": "cas-a", "size_bytes": 1})));
            }
            s.write_owned("file_paths", rows).await
        }
        _ => {
            let Some(u) = some_row(s, "file_paths", rng, true).await else {
                return Default::default();
            };
            s.delete_owned("file_paths", u).await
        }
    };
    match res {
        Ok(out) => out.into_signed(),
        // e.g. a create of a relation that exists: a refused local write changes nothing.
        Err(_) => Default::default(),
    }
}
