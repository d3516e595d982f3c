//! Proofs of authorship: a run of generated ops signed by a real author verifies; the same
//! run with any op changed, or under a proof the fuzzer built, is refused, and nothing
//! panics whatever the bytes.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use murmur_store::Op;
use murmur_store::proof::{Hash, Proof, Signer, op_hash};
use murmur_store::wire::from_cbor;

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| Signer::with_nonce(murmur_fuzz::device_key(), 7))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(1..=8u64) else {
        return;
    };
    let Ok(first) = u.int_in_range(1..=1_000u64) else {
        return;
    };
    let s = signer();
    let mut ops: Vec<Op> = Vec::new();
    for i in 0..n {
        let Ok(mut op) = murmur_fuzz::op(&mut u, 1 << 40, i) else {
            return;
        };
        op.author = s.author();
        op.seq = first + i;
        ops.push(op);
    }
    let prev = Hash([u.arbitrary::<u8>().unwrap_or(0); 32]);
    let prev = if first == 1 { Hash::ZERO } else { prev };
    let proof = s.prove(prev, &ops);
    assert!(proof.verify(ops.iter()).is_ok(), "a real proof must verify");
    // Any change to one op: refused, unless the op came out the same.
    if let Ok(i) = u.choose_index(ops.len()) {
        let mut changed = ops.clone();
        if let Ok(other) = murmur_fuzz::op(&mut u, 1 << 40, i as u64) {
            changed[i] = Op {
                author: s.author(),
                seq: ops[i].seq,
                ..other
            };
            // Compared by hash: a float's NaN is not equal to itself, its bits hash the same.
            if op_hash(&changed[i]) != op_hash(&ops[i]) {
                assert!(
                    proof.verify(changed.iter()).is_err(),
                    "a changed op verified under the original proof"
                );
            }
        }
    }
    // A proof from the rest of the bytes: never a panic.
    let rest = u.take_rest();
    if let Ok(p) = from_cbor::<Proof>(rest, 64 * 1024, "proof") {
        let _ = p.verify(ops.iter());
        let _ = p.verify(std::iter::empty());
    }
});
