//! The request-response codec's framing: a length prefix, a bounded body, CBOR, for both
//! message types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_node::protocol::{Request, Response};

fuzz_target!(|data: &[u8]| {
    let _ = murmur_p2p::decode_frame::<Request>(data, 64 * 1024);
    let _ = murmur_p2p::decode_frame::<Response>(data, 1024 * 1024);
});
