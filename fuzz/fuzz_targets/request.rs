//! Requests: decoded as the codec does, then served from a populated store. Whatever the
//! request asks, the answer is a bounded page or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_node::protocol::{PAGE_SIZE, Request, Response};
use murmur_node::sync::serve_request;
use murmur_store::wire::from_cbor;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = from_cbor::<Request>(data, 64 * 1024, "request") else {
        return;
    };
    murmur_fuzz::with_fixture(u32::MAX, true, |fx| {
        match fx.rt.block_on(serve_request(&fx.store, request)) {
            Ok(Response::Ops { page, .. }) => {
                let items: usize = page.changes.iter().map(|c| c.weight()).sum();
                assert!(items <= PAGE_SIZE, "ops page of {items} items");
            }
            Ok(Response::Snapshot { rows, .. }) => {
                assert!(
                    rows.len() <= PAGE_SIZE,
                    "snapshot page of {} rows",
                    rows.len()
                );
            }
            Ok(_) => {}
            Err(e) => assert!(e.is_bad_input(), "store failure serving a request: {e}"),
        }
    });
});
