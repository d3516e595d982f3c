//! Gossip payloads: the node's check (decode, size, op count, schema, proofs of authorship,
//! version announcement bounds), and `validate_op` on every op whatever its author.
#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_node::protocol::Gossip;
use murmur_node::sync::check_gossip_message;
use murmur_store::Registry;
use murmur_store::validate::validate_op;
use murmur_store::wire::from_cbor;

fuzz_target!(|data: &[u8]| {
    let registry = Registry::default_library();
    let _ = check_gossip_message(&registry, data);
    if let Ok(Gossip::Ops { ops, .. }) = from_cbor::<Gossip>(data, 1024 * 1024, "gossip") {
        for op in &ops {
            let _ = validate_op(&registry, op);
        }
    }
});
