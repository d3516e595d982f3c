//! Crash safety: a `murmur` process is killed with SIGKILL at random moments during local
//! writes, during a catch-up of many ops, and during a snapshot import, then restarted on
//! its data dir. Each time its database must open, every write it acknowledged must be
//! there, and it must converge with its peer.
//!
//! Seeded: `MURMUR_CRASH_SEED=<seed>` replays a run; `MURMUR_CRASH_ROUNDS` runs longer.

use std::time::Duration;

use murmur_testkit::procs::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value as J, json};

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const A: usize = 0;
const B: usize = 1;

async fn metric(c: &Cluster, i: usize, name: &str) -> f64 {
    let Ok(r) = c.request(Method::GET, i, "/metrics").send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether node `i` has received anything from its peer since it started.
async fn receiving(c: &Cluster, i: usize) -> bool {
    let (_, st) = c.get(i, "/v1/status").await;
    st["progress"].as_array().is_some_and(|p| !p.is_empty())
        || metric(c, i, "murmur_ops_applied_total{source=\"catchup\"}").await > 0.0
        || metric(c, i, "murmur_snapshots_imported_total").await > 0.0
}

/// Posts tags to node `i` until `stop_after` are acknowledged; returns their uuids.
async fn write_tags(c: &Cluster, i: usize, n: usize, prefix: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for k in 0..n {
        let (s, b) = c
            .post(
                i,
                "/v1/shared/tags",
                json!({"name": format!("{prefix}{k}")}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        acked.push(b["uuid"].as_str().expect("uuid").to_owned());
    }
    acked
}

async fn bulk(c: &Cluster, i: usize, n: usize, prefix: &str) {
    for start in (0..n).step_by(1000) {
        let items: Vec<J> = (start..(start + 1000).min(n))
            .map(|k| json!({"op": "create", "resource": "jobs", "fields": {"name": format!("{prefix}{k}"), "status": "done"}}))
            .collect();
        let (s, b) = c.post(i, "/v1/batch", J::Array(items)).await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn restart(c: &mut Cluster, i: usize) {
    c.procs[i].spawn();
    c.wait_healthy(i).await;
}

async fn all_present(c: &Cluster, i: usize, uuids: &[String]) -> bool {
    for u in uuids {
        if c.get(i, &format!("/v1/shared/tags/{u}")).await.0 != 200 {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("MURMUR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("MURMUR_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    println!("crash test: seed {seed}, {rounds} rounds (replay with MURMUR_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    // Short staleness and pruning so that the snapshot path is reachable in a test. A
    // third node stays up with A: an op is pruned only once another device holds it, and
    // B becomes stale only while A is in contact with some peer.
    let mut c = Cluster::start_with(BIN, 3, |_| {
        [
            "--stale-after",
            "3s",
            "--prune-interval",
            "300ms",
            "--announce-interval",
            "200ms",
        ]
        .map(String::from)
        .to_vec()
    })
    .await;
    poll("connected", || async { c.connected(A).await == 2 }).await;
    let mut acked_on_b: Vec<String> = Vec::new();

    for round in 0..rounds {
        // 1. During local writes: B acknowledges writes while it is killed.
        let n = rng.random_range(1..40);
        acked_on_b.extend(write_tags(&c, B, n, &format!("r{round}-")).await);
        let in_flight = c
            .request(Method::POST, B, "/v1/shared/tags")
            .json(&json!({"name": "in flight"}))
            .send();
        let kill_after = Duration::from_millis(rng.random_range(0..5));
        let _ = tokio::time::timeout(kill_after, in_flight).await;
        c.procs[B].kill9();
        restart(&mut c, B).await;
        assert!(
            all_present(&c, B, &acked_on_b).await,
            "round {round}: an acknowledged write was lost (seed {seed})"
        );
        println!(
            "round {round}: killed during writes; {} acknowledged writes all present",
            acked_on_b.len()
        );

        // 2. During a catch-up: B misses many ops, comes back, and dies while pulling them.
        c.procs[B].kill9();
        bulk(&c, A, rng.random_range(3_000..8_000), &format!("c{round}-")).await;
        c.procs[B].spawn();
        // (If B was away longer than --stale-after, this is a snapshot rather than ops:
        // either way B dies while receiving.)
        poll("B starts receiving", || async { receiving(&c, B).await }).await;
        c.procs[B].kill9();
        restart(&mut c, B).await;
        assert!(
            all_present(&c, B, &acked_on_b).await,
            "round {round}: lost a write after a kill during catch-up"
        );
        poll("converged after a kill during catch-up", || {
            c.digests_equal()
        })
        .await;
        println!("round {round}: killed during catch-up; converged");

        // 3. During a snapshot import: B is away past --stale-after, A prunes its log, B
        //    returns and must take a snapshot; it dies in the middle of importing it.
        c.procs[B].kill9();
        bulk(
            &c,
            A,
            rng.random_range(5_000..12_000),
            &format!("s{round}-"),
        )
        .await;
        poll("A prunes while B is stale", || async {
            metric(&c, A, "murmur_pending_operations").await == 0.0
        })
        .await;
        c.procs[B].spawn();
        poll("B starts importing a snapshot", || async {
            let (_, st) = c.get(B, "/v1/status").await;
            st["progress"]
                .as_array()
                .is_some_and(|p| p.iter().any(|w| w["kind"] == "snapshot"))
                || metric(&c, B, "murmur_snapshots_imported_total").await > 0.0
        })
        .await;
        c.procs[B].kill9();
        restart(&mut c, B).await;
        assert!(
            all_present(&c, B, &acked_on_b).await,
            "round {round}: lost a write after a kill during snapshot import"
        );
        poll("converged after a kill during snapshot import", || {
            c.digests_equal()
        })
        .await;
        println!("round {round}: killed during snapshot import; converged");
    }
    // Every write B acknowledged reached A too.
    assert!(all_present(&c, A, &acked_on_b).await);
}
