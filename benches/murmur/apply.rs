//! Scenario 1, remote apply: batches of remote `SharedUpdate` ops applied to a store, against
//! plain upserts of the same rows and the floors of `plain` (log, merge statement, LWW
//! columns), in interleaved rounds; then the cost of a missed in-place attempt.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use murmur::store::proof::{Hash, Signer, chain_next, op_hash};
use murmur::store::{Change, Clock, Method, Op, Origin, PhysicalClock, Value};
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::plain::{PlainMerge, TX_ROWS, plain_pool, plain_tags, plain_tags_logged};
use crate::{Res, Row, fmt_rate, median, min_max, open_store, rate};

pub async fn bench_apply(n: usize, rounds: usize) -> Res<(Vec<Row>, J)> {
    eprintln!(
        "[apply] {n} remote SharedUpdate ops in batches of {TX_ROWS}, {rounds} rounds of murmur and its baselines, interleaved"
    );
    let dir = tempfile::tempdir()?;
    let store = open_store(&dir.path().join("r.db"), Uuid::new_v4()).await?;
    // The remote author, a device of its own: the signed pass proves its ops as a peer does.
    let signer = Signer::new_incarnation(murmur_testkit::device_key(0xbe9c));
    let author = signer.author();
    // The author's chain hash after its last op made so far.
    let mut at = Hash::ZERO;
    let clock = Clock::new(author, Duration::from_millis(100), PhysicalClock::System);
    let uuids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let op = |seq: u64, method, uuid, property: Option<&str>, value: Option<Value>, fields| Op {
        author,
        seq,
        time: clock.now().time,
        method,
        resource: "tags".into(),
        uuid: Some(uuid),
        property: property.map(str::to_owned),
        value,
        fields,
        count: None,
        groups: Vec::new(),
    };
    // The rows exist first (not timed), here and in each baseline's table.
    let mut seq = 0u64;
    let t = Instant::now();
    for chunk in uuids.chunks(TX_ROWS) {
        let changes: Vec<Change> = chunk
            .iter()
            .map(|u| {
                seq += 1;
                let fields = BTreeMap::from([
                    ("name".to_owned(), Value::Text(format!("tag {seq}"))),
                    ("color".to_owned(), Value::Text("red".into())),
                ]);
                Change::Op(op(seq, Method::SharedCreate, *u, None, None, fields))
            })
            .collect();
        advance(&mut at, &changes);
        let rep = store.apply(changes).await?;
        assert_eq!(rep.applied, chunk.len(), "creates applied");
    }
    let creates = t.elapsed();
    let pool = plain_pool(&dir.path().join("plain.db")).await?;
    let base: Vec<(String, String, String)> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| (u.hyphenated().to_string(), format!("tag {i}"), "red".into()))
        .collect();
    plain_tags(&pool, &base, TX_ROWS, true).await?;
    let (blob, lww, unborn) = (
        PlainMerge::clock_blob(),
        PlainMerge::lww_columns(),
        PlainMerge::lww_unborn(),
    );
    blob.setup(&pool, &base).await?;
    lww.setup(&pool, &base).await?;
    unborn.setup(&pool, &base).await?;

    // Each round times murmur and every baseline once, in an order rotated per round, on
    // the same rows: one SharedUpdate of `name` per row, newer than the last round's.
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios = Vec::with_capacity(rounds);
    let mut in_place = 0usize;
    // One SharedUpdate of `name` (or `color`) per row, in batches, newer than those made
    // before.
    let mut updates_of_every_row = |property: &str| -> Vec<Vec<Change>> {
        uuids
            .chunks(TX_ROWS)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|u| {
                        seq += 1;
                        Change::Op(op(
                            seq,
                            Method::SharedUpdate,
                            *u,
                            Some(property),
                            Some(Value::Text(format!("renamed {seq}"))),
                            BTreeMap::new(),
                        ))
                    })
                    .collect()
            })
            .collect()
    };
    let mut signed_ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let updates = updates_of_every_row("name");
        for b in &updates {
            advance(&mut at, b);
        }
        // The signed pass changes another property, so neither pass makes the other's
        // updates stale.
        let mut signed = Vec::new();
        for b in updates_of_every_row("color") {
            let ops: Vec<Op> = b.iter().map(|c| c.op().clone()).collect();
            let proof = signer.prove(at, &ops);
            advance(&mut at, &b);
            signed.push((b, proof));
        }
        let mut signed = Some(signed);
        let upd: Vec<(String, String, String)> = base
            .iter()
            .enumerate()
            .map(|(i, (u, _, c))| (u.clone(), format!("renamed {round} {i}"), c.clone()))
            .collect();
        let mut round_times: BTreeMap<&str, f64> = BTreeMap::new();
        let mut updates = Some(updates);
        for k in 0..7 {
            let (name, took) = match (k + round) % 7 {
                6 => {
                    let t = Instant::now();
                    for (batch, proof) in signed.take().unwrap_or_default() {
                        let len = batch.len();
                        let rep = store
                            .apply_signed(batch, vec![proof], Origin::CatchUp)
                            .await?;
                        assert_eq!(rep.applied, len, "signed updates applied");
                    }
                    ("murmur_signed", t.elapsed())
                }
                0 => {
                    let t = Instant::now();
                    for batch in updates.take().unwrap_or_default() {
                        let len = batch.len();
                        let rep = store.apply(batch).await?;
                        assert_eq!(rep.applied, len, "updates applied");
                        in_place += rep.in_place;
                    }
                    ("murmur", t.elapsed())
                }
                1 => {
                    let t = Instant::now();
                    plain_tags(&pool, &upd, TX_ROWS, true).await?;
                    ("baseline", t.elapsed())
                }
                2 => {
                    let t = Instant::now();
                    plain_tags_logged(&pool, &upd, TX_ROWS, true, "SharedUpdate").await?;
                    ("floor", t.elapsed())
                }
                3 => ("merge_floor", blob.round(&pool, &upd, round as u64).await?),
                4 => ("lww_floor", lww.round(&pool, &upd, round as u64).await?),
                _ => ("lww_unborn", unborn.round(&pool, &upd, round as u64).await?),
            };
            round_times.insert(name, rate(n, took));
        }
        let ratio = round_times["murmur"] / round_times["baseline"];
        signed_ratios.push(round_times["murmur_signed"] / round_times["murmur"]);
        eprintln!(
            "  round {}: with proofs of authorship {} ({:.2} of the unproven apply)",
            round + 1,
            fmt_rate(round_times["murmur_signed"]),
            round_times["murmur_signed"] / round_times["murmur"]
        );
        eprintln!(
            "  round {}: murmur {}, plain upserts {}, ratio {ratio:.2}; floors: log {:.2}, merge {:.2}, LWW {:.2}, LWW with the unborn check {:.2}",
            round + 1,
            fmt_rate(round_times["murmur"]),
            fmt_rate(round_times["baseline"]),
            round_times["floor"] / round_times["baseline"],
            round_times["merge_floor"] / round_times["baseline"],
            round_times["lww_floor"] / round_times["baseline"],
            round_times["lww_unborn"] / round_times["baseline"],
        );
        ratios.push(ratio);
        for (k, v) in round_times {
            times.entry(k).or_default().push(v);
        }
    }
    // Not in the ratio: the same pass where each batch holds one update older than this
    // replica's own later write of its register. The in-place attempt then misses, is
    // rolled back and run again naming the rows its statements change, and the stale op
    // takes the general path (the cost of a miss, measured here).
    let stale_batches = updates_of_every_row("name");
    for chunk in uuids.chunks(TX_ROWS) {
        let newer = json!({"name": "written here, later"});
        let fields = newer.as_object().cloned().unwrap_or_default();
        store.update_shared("tags", chunk[0], fields).await?;
    }
    let (t, mut stale_in_place) = (Instant::now(), 0);
    for batch in stale_batches {
        let len = batch.len();
        let rep = store.apply(batch).await?;
        assert_eq!(rep.applied, len, "updates applied");
        stale_in_place += rep.in_place;
    }
    let stale = rate(n, t.elapsed());
    store.close().await;
    pool.close().await;

    let med = |k: &str| median(&times[k]);
    let (m, b) = (med("murmur"), med("baseline"));
    eprintln!(
        "  with one stale update per batch (a missed attempt, run again naming the rows it changes; {stale_in_place} ops in place): murmur {} ({:.2} of the in-place median)",
        fmt_rate(stale),
        stale / m
    );
    let ratio = median(&ratios);
    let (lo, hi) = min_max(&ratios);
    let (floor, merged, lww) = (med("floor"), med("merge_floor"), med("lww_floor"));
    let unborn = med("lww_unborn");
    eprintln!(
        "  medians: murmur {} ({:.0}% in place), plain upserts {}, ratio {ratio:.2} ({lo:.2} to {hi:.2} over rounds)",
        fmt_rate(m),
        100.0 * in_place as f64 / (n * rounds) as f64,
        fmt_rate(b),
    );
    eprintln!(
        "  floors, of the baseline: upserts + log {:.2}; murmur's merge statement + log (merge floor) {:.2}, murmur is {:.2} of it; \
         a timestamp column per property + log (LWW floor) {:.2}, murmur is {:.2} of it; \
         the same with murmur's unborn check instead of the EXISTS (LWW unborn floor) {:.2}, murmur is {:.2} of it",
        floor / b,
        merged / b,
        m / merged,
        lww / b,
        m / lww,
        unborn / b,
        m / unborn
    );
    let signed_ratio = median(&signed_ratios);
    let (slo, shi) = min_max(&signed_ratios);
    let signed_rate = med("murmur_signed");
    eprintln!(
        "  with proofs of authorship: {} ({signed_ratio:.2} of the unproven apply; {slo:.2} to {shi:.2} over rounds)",
        fmt_rate(signed_rate)
    );
    Ok((
        vec![
            Row {
                scenario: format!("apply {n} remote ops with proofs of authorship"),
                figure: "ops/s (median of signed / unproven)".into(),
                murmur: format!(
                    "{} ({signed_ratio:.2}; {slo:.2}-{shi:.2})",
                    fmt_rate(signed_rate)
                ),
                baseline: format!("{} the same apply without proofs", fmt_rate(m)),
                goal: "ratio >= 0.85".into(),
                pass: Some(signed_ratio >= 0.85),
            },
            Row {
                scenario: format!("apply {n} remote SharedUpdate ops, {TX_ROWS}/batch"),
                figure: "ops/s (median ratio)".into(),
                murmur: format!("{} ({ratio:.2}; {lo:.2}-{hi:.2})", fmt_rate(m)),
                baseline: format!(
                    "{} plain upserts (+log: {:.2}; merge floor: {:.2}; LWW floor: {:.2}, LWW unborn floor {:.2})",
                    fmt_rate(b),
                    floor / b,
                    merged / b,
                    lww / b,
                    unborn / b
                ),
                goal: "ratio >= 0.5".into(),
                pass: Some(ratio >= 0.5),
            },
        ],
        json!({"ops": n, "batch": TX_ROWS, "rounds": rounds, "ops_per_s": m,
               "in_place_ops": in_place, "create_seconds": creates.as_secs_f64(),
               "baseline_per_s": b, "ratio": ratio, "ratio_min": lo, "ratio_max": hi,
               "ratios": ratios, "signed_per_s": signed_rate, "signed_ratio": signed_ratio,
               "signed_ratios": signed_ratios,
               "floor_per_s": floor, "floor_ratio": floor / b, "murmur_of_floor": m / floor,
               "merge_floor_per_s": merged, "merge_floor_ratio": merged / b,
               "murmur_of_merge_floor": m / merged,
               "lww_floor_per_s": lww, "lww_floor_ratio": lww / b, "murmur_of_lww_floor": m / lww,
               "lww_unborn_per_s": unborn, "lww_unborn_ratio": unborn / b,
               "murmur_of_lww_unborn_floor": m / unborn,
               "one_stale_per_batch_per_s": stale, "one_stale_per_batch_in_place": stale_in_place,
               "per_round_per_s": times}),
    ))
}

/// Moves `at` over the ops of `changes`, in order.
fn advance(at: &mut Hash, changes: &[Change]) {
    for c in changes {
        *at = chain_next(at, &op_hash(c.op()));
    }
}
