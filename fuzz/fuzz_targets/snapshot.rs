//! Snapshot page rows: decoded, validated, imported into a store; what was imported must read
//! back (digest and export), and importing the same page again must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_store::SnapshotRow;
use murmur_store::validate::validate_snapshot_row;
use murmur_store::wire::from_cbor;

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = from_cbor::<Vec<SnapshotRow>>(data, 16 * 1024 * 1024, "snapshot page") else {
        return;
    };
    murmur_fuzz::with_fixture(512, false, |fx| {
        let store = &fx.store;
        let valid = rows
            .iter()
            .all(|r| validate_snapshot_row(store.registry(), r).is_ok());
        let imported = fx.rt.block_on(store.import_snapshot_page(rows.clone()));
        match imported {
            Ok(_) => assert!(valid, "an invalid snapshot page was imported"),
            Err(e) => {
                assert!(e.is_bad_input(), "store failure importing a page: {e}");
                return;
            }
        }
        let before = fx.rt.block_on(store.digest()).expect("digest after import");
        fx.rt
            .block_on(store.import_snapshot_page(rows))
            .expect("the same page imports again");
        let after = fx
            .rt
            .block_on(store.digest())
            .expect("digest after re-import");
        assert_eq!(before, after, "importing a page twice changed the state");
        let mut pos = None;
        loop {
            let (_, next) = fx
                .rt
                .block_on(store.snapshot_page(pos.as_ref(), 1000))
                .expect("export reads back what was imported");
            match next {
                Some(p) => pos = Some(p),
                None => break,
            }
        }
    });
});
