//! Responses, as a pulling node consumes them: an ops page is validated and applied, a
//! snapshot page validated and imported (with its version vector checked and recorded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_node::protocol::Response;
use murmur_store::validate::{validate_change, validate_snapshot_row};
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
                    .block_on(store.apply(page.changes))
                    .expect("applying a page only fails on a store error");
                assert!(report.applied + report.duplicates <= n + report.needs_rows.len());
            }
            Response::Snapshot { rows, covers, .. } => {
                for r in &rows {
                    let _ = validate_snapshot_row(store.registry(), r);
                }
                if let Err(e) = fx.rt.block_on(store.import_snapshot_page(rows)) {
                    assert!(e.is_bad_input(), "store failure importing a page: {e}");
                }
                if let Some(vv) = covers
                    && let Err(e) = fx.rt.block_on(store.finish_snapshot(&vv))
                {
                    assert!(e.is_bad_input(), "store failure finishing a snapshot: {e}");
                }
                fx.rt
                    .block_on(store.digest())
                    .expect("digest after a snapshot page");
            }
            Response::SnapshotRequired | Response::Error(_) => {}
        }
    });
});
