//! Responses, as a pulling node consumes them: an ops page is validated and applied with its
//! proofs (whatever no valid proof covers is refused), a snapshot page validated and imported
//! (its proofs checked before the rows and when it ends), rows sent for a repair merged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_node::protocol::Response;
use murmur_store::validate::{validate_change, validate_snapshot_row};
use murmur_store::Origin;
use murmur_store::wire::from_cbor;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = from_cbor::<Response>(data, 16 * 1024 * 1024, "response") else {
        return;
    };
    murmur_fuzz::with_fixture(512, false, |fx| {
        let store = &fx.store;
        match response {
            Response::Ops { page, .. } => {
                for c in &page.changes {
                    let _ = validate_change(store.registry(), c);
                }
                let n = page.changes.len();
                let report = fx
                    .rt
                    .block_on(store.apply_signed(page.changes, page.proofs, Origin::CatchUp))
                    .expect("applying a page only fails on a store error");
                assert!(report.applied + report.duplicates <= n + report.needs_rows.len());
            }
            Response::Snapshot { rows, proofs, .. } => {
                fx.rt
                    .block_on(store.begin_snapshot(proofs.clone()))
                    .expect("checking a snapshot's proofs only fails on a store error");
                for r in &rows {
                    let _ = validate_snapshot_row(store.registry(), r);
                }
                if let Err(e) = fx.rt.block_on(store.import_snapshot_page(rows)) {
                    assert!(e.is_bad_input(), "store failure importing a page: {e}");
                }
                let vv = store.version_vector();
                let refused = fx
                    .rt
                    .block_on(store.finish_snapshot(proofs.clone()))
                    .expect("finishing a snapshot only fails on a store error");
                // Only a proof that holds moves the version vector.
                if refused.len() == proofs.len() {
                    assert_eq!(store.version_vector(), vv, "refused proofs moved the vector");
                }
                fx.rt
                    .block_on(store.digest())
                    .expect("digest after a snapshot page");
            }
            // Rows sent to repair a divergence: merged (only the sender's own registers),
            // or refused; never a store failure.
            Response::Rows { rows, .. } => {
                if let Err(e) = fx.rt.block_on(store.repair(rows, uuid::Uuid::nil())) {
                    assert!(e.is_bad_input(), "store failure repairing: {e}");
                }
                fx.rt
                    .block_on(store.digest())
                    .expect("digest after a repair");
            }
            Response::Fingerprints(_) | Response::Range(_) => {}
            Response::SnapshotRequired | Response::Error(_) => {}
            Response::Welcome | Response::Joined { .. } | Response::Refused { .. } => {}
        }
    });
});
