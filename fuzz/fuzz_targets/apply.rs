//! The op apply path: a structured batch of changes (valid, nearly valid and hostile) applied
//! to a store; applying it again must change nothing. Then the pure merge rules: shared-row
//! and owned-row registers end the same whatever the order of ops, and applying an op twice
//! is a no-op.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use murmur_store::merge::{OwnedRegisters, OwnedWrite, SharedRow};
use murmur_store::{Hlc, Value};

const COLUMNS: [&str; 2] = ["name", "color"];

#[derive(Clone, Debug)]
enum SharedOp {
    Create(Hlc, BTreeMap<String, Value>),
    Update(Hlc, String, Value),
    Delete(Hlc),
}

fn run(row: &mut SharedRow, op: &SharedOp) {
    match op {
        SharedOp::Create(ts, fields) => {
            row.create(*ts, COLUMNS.into_iter(), fields);
        }
        SharedOp::Update(ts, p, v) => {
            row.update(*ts, p, v);
        }
        SharedOp::Delete(ts) => {
            row.delete(*ts);
        }
    }
}

fn merges(u: &mut Unstructured) -> arbitrary::Result<()> {
    // Shared rows: distinct timestamps, as every real op has.
    let n = u.int_in_range(0..=12)?;
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let ts = Hlc {
            time: u.int_in_range(0..=8u64)? * 16 + i as u64,
            author: *u.choose(&murmur_fuzz::AUTHORS)?,
        };
        let v = murmur_fuzz::value(u)?;
        ops.push(match u.int_in_range(0..=2)? {
            0 => SharedOp::Create(ts, BTreeMap::from([("name".to_owned(), v)])),
            1 => SharedOp::Update(ts, (*u.choose(&COLUMNS)?).to_owned(), v),
            _ => SharedOp::Delete(ts),
        });
    }
    let mut in_order = SharedRow::default();
    for op in &ops {
        run(&mut in_order, op);
    }
    let mut shuffled = ops.clone();
    for i in (1..shuffled.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        shuffled.swap(i, j);
    }
    let mut other = SharedRow::default();
    for op in shuffled.iter().chain(&ops) {
        run(&mut other, op);
    }
    // NaN never equals itself: compare the stored bits.
    assert_eq!(
        format!("{in_order:?}"),
        format!("{other:?}"),
        "shared merge depends on order or repetition: {ops:?}"
    );

    // Owned rows: the owner (the lowest create) and the row (its latest op) end the same
    // whatever the order of creates and deletes by several devices, and repetition.
    let n = u.int_in_range(0..=10)?;
    let mut owned = Vec::with_capacity(n);
    for i in 0..n {
        let device = *u.choose(&murmur_fuzz::AUTHORS)?;
        let ts = Hlc {
            time: u.int_in_range(0..=8u64)? * 16 + i as u64,
            author: device,
        };
        let values = if u.arbitrary()? {
            Some(vec![murmur_fuzz::value(u)?])
        } else {
            None
        };
        owned.push((
            device,
            OwnedWrite {
                ts,
                seq: i as u64 + 1,
                values,
            },
        ));
    }
    let mut in_order = OwnedRegisters::default();
    for (d, w) in &owned {
        in_order.merge(*d, w.clone());
    }
    let mut shuffled = owned.clone();
    for i in (1..shuffled.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        shuffled.swap(i, j);
    }
    let mut other = OwnedRegisters::default();
    for (d, w) in shuffled.iter().chain(&owned) {
        other.merge(*d, w.clone());
    }
    assert_eq!(
        format!("{in_order:?}"),
        format!("{other:?}"),
        "owned merge depends on order or repetition: {owned:?}"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = merges(&mut u);
    murmur_fuzz::with_fixture(256, false, |fx| {
        let store = &fx.store;
        let now = store.clock().physical_now();
        let mut changes = Vec::new();
        let n = u.int_in_range(0..=16).unwrap_or(0);
        for i in 0..n {
            match murmur_fuzz::change(&mut u, now, i) {
                Ok(c) => changes.push(c),
                Err(_) => break,
            }
        }
        fx.rt
            .block_on(store.apply(changes.clone()))
            .expect("apply fails only on a store error");
        let first = fx.rt.block_on(store.digest()).expect("digest");
        fx.rt
            .block_on(store.apply(changes))
            .expect("apply again fails only on a store error");
        let second = fx.rt.block_on(store.digest()).expect("digest");
        assert_eq!(
            first, second,
            "applying the same changes twice changed the state"
        );
    });
});
