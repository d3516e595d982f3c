//! Scenario 2, local writes: creates through `Store::batch` and one `create_shared` per
//! transaction, against plain inserts (and plain inserts with a log, the floor), in
//! interleaved rounds.

use std::collections::BTreeMap;
use std::time::Instant;

use murmur::store::BatchEntry;
use serde_json::{Value as J, json};
use uuid::Uuid;

use crate::plain::{plain_pool, plain_tags, plain_tags_logged};
use crate::{Res, Row, fmt_rate, median, min_max, open_store, rate};

pub async fn bench_local(n_batched: usize, n_single: usize, rounds: usize) -> Res<(Vec<Row>, J)> {
    const PER_BATCH: usize = 500;
    eprintln!(
        "[local] {n_batched} creates via Store::batch ({PER_BATCH}/tx), {n_single} single create_shared; {rounds} rounds of murmur and its baselines, interleaved"
    );
    let dir = tempfile::tempdir()?;
    let store = open_store(&dir.path().join("l.db"), Uuid::new_v4()).await?;
    let pool = plain_pool(&dir.path().join("plain.db")).await?;
    let new_rows = |n: usize, prefix: &str| -> Vec<(String, String, String)> {
        (0..n)
            .map(|i| {
                (
                    Uuid::now_v7().hyphenated().to_string(),
                    format!("{prefix} {i}"),
                    "blue".into(),
                )
            })
            .collect()
    };
    let entry = |(u, name, color): &(String, String, String)| BatchEntry::Create {
        resource: "tags".into(),
        uuid: Uuid::parse_str(u).ok(),
        fields: json!({"name": name, "color": color})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    // Each round writes new rows (murmur's, the baseline's and the floor's each their own),
    // so every table grows alike; the API's input is built before timing, as the rows are.
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let (mut batched_ratios, mut single_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let rows = new_rows(n_batched, "tag");
        let floor_rows = new_rows(n_batched, "tag");
        let singles = new_rows(n_single, "single");
        let mut batches: Option<Vec<Vec<BatchEntry>>> = Some(
            rows.chunks(PER_BATCH)
                .map(|chunk| chunk.iter().map(entry).collect())
                .collect(),
        );
        let mut single_entries: Option<Vec<BatchEntry>> = Some(singles.iter().map(entry).collect());
        let mut round_times: BTreeMap<&str, f64> = BTreeMap::new();
        for k in 0..5 {
            let t = Instant::now();
            let (name, n) = match (k + round) % 5 {
                0 => {
                    for batch in batches.take().unwrap_or_default() {
                        store.batch(batch).await?;
                    }
                    ("murmur_batched", n_batched)
                }
                1 => {
                    for e in single_entries.take().unwrap_or_default() {
                        if let BatchEntry::Create { uuid, fields, .. } = e {
                            store.create_shared("tags", uuid, fields).await?;
                        }
                    }
                    ("murmur_single", n_single)
                }
                2 => {
                    plain_tags(&pool, &rows, PER_BATCH, false).await?;
                    ("baseline_batched", n_batched)
                }
                3 => {
                    plain_tags(&pool, &singles, 1, false).await?;
                    ("baseline_single", n_single)
                }
                _ => {
                    plain_tags_logged(&pool, &floor_rows, PER_BATCH, false, "SharedCreate").await?;
                    ("floor_batched", n_batched)
                }
            };
            round_times.insert(name, rate(n, t.elapsed()));
        }
        let rb = round_times["murmur_batched"] / round_times["baseline_batched"];
        let rs = round_times["murmur_single"] / round_times["baseline_single"];
        eprintln!(
            "  round {}: batched murmur {} vs plain {} ({rb:.2}); single murmur {} vs plain {} ({rs:.2})",
            round + 1,
            fmt_rate(round_times["murmur_batched"]),
            fmt_rate(round_times["baseline_batched"]),
            fmt_rate(round_times["murmur_single"]),
            fmt_rate(round_times["baseline_single"]),
        );
        batched_ratios.push(rb);
        single_ratios.push(rs);
        for (k, v) in round_times {
            times.entry(k).or_default().push(v);
        }
    }
    store.close().await;
    pool.close().await;

    let med = |k: &str| median(&times[k]);
    let (mb, bb, fb) = (
        med("murmur_batched"),
        med("baseline_batched"),
        med("floor_batched"),
    );
    let (ms, bs) = (med("murmur_single"), med("baseline_single"));
    let (rb, rs) = (median(&batched_ratios), median(&single_ratios));
    let ((blo, bhi), (slo, shi)) = (min_max(&batched_ratios), min_max(&single_ratios));
    eprintln!(
        "  medians: batched murmur {} vs plain {} ({rb:.2}; {blo:.2} to {bhi:.2}); single murmur {} vs plain {} ({rs:.2}; {slo:.2} to {shi:.2}); \
         floor (plain inserts + log) {:.2} of the baseline, murmur is {:.2} of it",
        fmt_rate(mb),
        fmt_rate(bb),
        fmt_rate(ms),
        fmt_rate(bs),
        fb / bb,
        mb / fb
    );
    Ok((
        vec![
            Row {
                scenario: format!("local creates, Store::batch of {PER_BATCH} ({n_batched})"),
                figure: "writes/s (median ratio)".into(),
                murmur: format!("{} ({rb:.2}; {blo:.2}-{bhi:.2})", fmt_rate(mb)),
                baseline: format!(
                    "{} plain inserts, {PER_BATCH}/tx (+log: {:.2})",
                    fmt_rate(bb),
                    fb / bb
                ),
                goal: "ratio >= 0.3".into(),
                pass: Some(rb >= 0.3),
            },
            Row {
                scenario: format!("local creates, one create_shared per tx ({n_single})"),
                figure: "writes/s (median ratio)".into(),
                murmur: format!("{} ({rs:.2}; {slo:.2}-{shi:.2})", fmt_rate(ms)),
                baseline: format!("{} plain inserts, 1/tx", fmt_rate(bs)),
                goal: "ratio >= 0.3".into(),
                pass: Some(rs >= 0.3),
            },
        ],
        json!({
            "rounds": rounds,
            "batched": {"writes": n_batched, "per_tx": PER_BATCH, "per_s": mb, "baseline_per_s": bb,
                        "ratio": rb, "ratio_min": blo, "ratio_max": bhi, "ratios": batched_ratios,
                        "floor_per_s": fb, "floor_ratio": fb / bb, "murmur_of_floor": mb / fb},
            "single": {"writes": n_single, "per_s": ms, "baseline_per_s": bs,
                       "ratio": rs, "ratio_min": slo, "ratio_max": shi, "ratios": single_ratios},
            "per_round_per_s": times,
        }),
    ))
}
