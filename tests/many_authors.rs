//! A library whose version vector has 10,000 authors (each a real incarnation with a
//! signed log, applied through the store's proof checks) still pulls, announces and serves
//! snapshots: no request is too large to encode, no honest announcement is refused or
//! penalised for its size.

use std::collections::HashMap;
use std::time::Duration;

use murmur::node::protocol::{HAVE_BYTES_CAP, PAGE_SIZE, Request, VV_EXTRA_CAP};
use murmur::p2p::config::DEFAULT_MAX_REQUEST_BYTES;
use murmur::store::proof::{Hash, Signer, chain_next, op_hash};
use murmur::store::wire::to_cbor;
use murmur::store::{Change, OpsCursor, Origin};
use murmur_testkit::ops::create_tag;
use murmur_testkit::*;
use uuid::Uuid;

const AUTHORS: usize = 10_000;
// Generous: in a debug build on a loaded 2-core machine the snapshot of 10,000 authors
// took over 120 s once (78 s alone).
const WAIT: Duration = Duration::from_secs(300);

/// Authors, and the hash of each one's chain so far.
struct Authors {
    signers: Vec<Signer>,
    chains: HashMap<Uuid, (u64, Hash)>,
}

impl Authors {
    fn new(n: usize) -> Authors {
        let signers: Vec<Signer> = (0..n)
            .map(|i| Signer::with_nonce(device_key(1_000 + (i % 16) as u128), i as u128 + 1))
            .collect();
        Authors {
            chains: signers
                .iter()
                .map(|s| (s.author(), (0, Hash::ZERO)))
                .collect(),
            signers,
        }
    }

    /// The next op of each of the first `n` authors, applied on `node` with its proofs
    /// (as a peer would have sent them).
    async fn write(&mut self, node: &TestNode, n: usize) {
        let store = node.node().store();
        for chunk in self.signers[..n].chunks(500) {
            let now = store.clock().physical_now();
            let (mut ops, mut proofs) = (Vec::new(), Vec::new());
            for s in chunk {
                let (seq, prev) = self.chains[&s.author()];
                let op = create_tag(s.author(), seq + 1, now, &format!("t{}", seq + 1));
                proofs.push(s.prove(prev, std::slice::from_ref(&op)));
                self.chains
                    .insert(s.author(), (seq + 1, chain_next(&prev, &op_hash(&op))));
                ops.push(Change::Op(op));
            }
            let report = store
                .apply_signed(ops, proofs, Origin::CatchUp)
                .await
                .expect("apply");
            assert!(report.rejected.is_empty(), "{:?}", report.rejected.first());
            assert_eq!(report.applied, chunk.len());
        }
    }
}

fn authors_of(n: &TestNode) -> usize {
    n.node().store().version_vector().authors.len()
}

/// Nothing was refused or penalised anywhere.
fn nothing_refused(nodes: &[&TestNode]) {
    for n in nodes {
        for reason in ["oversized", "malformed", "bad_request", "decode"] {
            assert_eq!(n.rejected(reason), 0, "{reason}");
        }
        assert_eq!(n.node().net_stats().gossip_rejected, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_of_ten_thousand_authors_keeps_pulling_announcing_and_serving_snapshots() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = TestNode::new(&secret).await;
    let mut authors = Authors::new(AUTHORS);
    authors.write(&a, AUTHORS).await;
    assert!(authors_of(&a) >= AUTHORS);

    // A new device catches up with all of them.
    let b = TestNode::new(&secret).await;
    b.connect(&a).await;
    wait_peers(&a, 1).await;
    converged(&[&a, &b], WAIT).await;
    assert!(authors_of(&b) >= AUTHORS);
    // Its vector no longer fits one request: its pulls go by author range, each request
    // well under the cap.
    let vv = b.node().store().version_vector();
    let whole = to_cbor(&vv).len();
    assert!(whole > DEFAULT_MAX_REQUEST_BYTES, "{whole}");
    let parts = vv.truncated(VV_EXTRA_CAP).split_by_bytes(HAVE_BYTES_CAP);
    let mut largest = 0;
    for (range, have) in &parts {
        let req = Request::OpsSince {
            have: have.clone(),
            cursor: OpsCursor::default(),
            limit: PAGE_SIZE as u32,
            range: Some(*range),
        };
        largest = largest.max(to_cbor(&req).len());
    }
    assert!(largest < DEFAULT_MAX_REQUEST_BYTES, "{largest}");
    eprintln!(
        "{} authors: the whole vector takes {whole} bytes; {} requests of at most {largest}",
        vv.authors.len(),
        parts.len()
    );

    // Ops that reach `a` only (not by gossip): `b`, whose vector has 10,000 authors, learns
    // of them from `a`'s announcements and pulls them.
    authors.write(&a, 100).await;
    converged(&[&a, &b], WAIT).await;
    // And the other way: `b`'s announcements (in parts) let `a` prune what both hold.
    eventually(WAIT, "a prunes the ops b holds", || async {
        a.node().store().horizon().len() >= AUTHORS
    })
    .await;
    nothing_refused(&[&a, &b]);

    // The snapshot's proofs travel in pages, all of them before its rows.
    let store = a.node().store();
    let all = store.snapshot_proofs().await.expect("proofs");
    let mut paged = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (p, next) = store
            .snapshot_proofs_page(after, 64 * 1024)
            .await
            .expect("page");
        paged.extend(p);
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(pages > 1, "{pages}");
    assert_eq!(paged, all);
    assert!(all.len() >= AUTHORS);

    // A device new to the library is behind `a`'s horizon: it joins by snapshot.
    let c = TestNode::new(&secret).await;
    c.connect(&a).await;
    eventually(WAIT, "c imports a's snapshot", || async {
        c.node().metrics().snapshots_imported.get() >= 1
    })
    .await;
    converged(&[&a, &b, &c], WAIT).await;
    assert!(authors_of(&c) >= AUTHORS);
    // And keeps pulling with its 10,000-author vector.
    authors.write(&a, 10).await;
    converged(&[&a, &b, &c], WAIT).await;
    nothing_refused(&[&a, &b, &c]);
}
