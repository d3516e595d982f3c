//! Hostile input: a peer that holds the library secret (so it passes pnet) but sends what an
//! honest node never would. It is a raw `murmur_p2p` swarm, so it can publish any bytes on
//! the library topic and send any CBOR as a request or a response.
//!
//! For every case the node must refuse the input and count it (node metrics
//! `ops_rejected{reason}` or the network counters), report a gossip `Reject` (which costs the
//! sender gossipsub score) where the input came by gossip, stay responsive to an honest peer,
//! and keep its state: after the hostile input, an honest write on the honest peer reaches
//! the node and both end with the same digest, with no trace of the hostile author.
//!
//! Decisions recorded here:
//! - An op at time 0 is a legal, very old write: applied, and it loses every last-writer-wins
//!   merge (rejecting it would leave a permanent gap in its author's sequence).
//! - An op far in the future is refused by the drift check when applied (`drift`), and the
//!   gossip message is not penalised: an honest device can have a wrong clock.
//! - Catch-up pages and snapshots are not signed per op: what the node checks there is the
//!   schema, ownership against the stored owner, drift, and the bounds of a version vector.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use murmur::node::device::DeviceBinding;
use murmur::node::protocol::{Gossip, PAGE_SIZE, Request, Response};
use murmur::node::sync::SERVE_CAP;
use murmur::p2p;
use murmur::store::{
    Change, Hlc, Method, OpsCursor, OpsPage, RejectReason, SnapshotPosition, SnapshotRow, Value,
    VersionVector,
};
use std::collections::BTreeMap;

use murmur::store::proof::{AuthorKey, Hash, Proof, Signer};
use murmur::store::validate::MAX_SEQ;
use murmur_testkit::hostile::*;
use murmur_testkit::ops::{create_tag, op};
use murmur_testkit::{converged, eventually, init_tracing, secret_file};
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_gossip_is_refused_counted_and_changes_nothing() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let now = n.node().store().clock().physical_now();
    let a_author = a.node().store().author();
    let mut authors = Vec::new();

    // Bytes that are not CBOR, CBOR cut short, CBOR of the wrong shape.
    authors.push(refused_gossip(&secret, &n, "decode", |_| b"\xff\x00 not cbor".to_vec()).await);
    authors.push(
        refused_gossip(&secret, &n, "decode", |s| {
            let me = s.author();
            let full = signed_ops(s, vec![create_tag(me, 1, now, "cut")]);
            full[..full.len() / 2].to_vec()
        })
        .await,
    );
    authors.push(
        refused_gossip(&secret, &n, "decode", |_| {
            murmur::store::wire::to_cbor(&json!({"Ops": "not a list"}))
        })
        .await,
    );
    // Ops the registry refuses. (Ops of a resource or field it does not know are kept, not
    // refused: a peer may run a newer schema; see tests/schema_versions.rs. Only an owned
    // batch of an unknown resource is refused: its rows would come from a table this node
    // does not have.)
    authors.push(
        refused_gossip(&secret, &n, "unknown_resource", |s| {
            let me = s.author();
            let mut o = op(me, 1, now, "nope", Method::OwnedBatchCreate);
            o.uuid = None;
            o.count = Some(1);
            signed_ops(s, vec![o])
        })
        .await,
    );
    authors.push(
        refused_gossip(&secret, &n, "wrong_type", |s| {
            let me = s.author();
            let mut o = op(me, 1, now, "tags", Method::SharedUpdate);
            o.property = Some("name".into());
            o.value = Some(Value::Int(5));
            signed_ops(s, vec![o])
        })
        .await,
    );
    authors.push(
        refused_gossip(&secret, &n, "wrong_type", |s| {
            let me = s.author();
            let mut o = op(me, 1, now, "albums", Method::SharedCreate);
            o.fields.insert("is_hidden".into(), Value::Int(7));
            signed_ops(s, vec![o])
        })
        .await,
    );
    authors.push(
        refused_gossip(&secret, &n, "malformed", |s| {
            let me = s.author();
            signed_ops(s, vec![op(me, 1, now, "file_paths", Method::SharedCreate)])
        })
        .await,
    );
    // Another client's ops, signed by the hostile peer.
    authors.push(
        refused_gossip(&secret, &n, "unproven", |s| {
            // A real author's next op, under the hostile peer's own proof.
            let mine = vec![create_tag(s.author(), 1, now, "mine")];
            gossip(&Gossip::Ops {
                ops: vec![create_tag(a_author, 99, now, "forged")],
                proofs: vec![s.prove(Hash::ZERO, &mine)],
            })
        })
        .await,
    );
    // The hostile peer's signature over other bytes.
    authors.push(
        refused_gossip(&secret, &n, "bad_proof", |s| {
            let signed = create_tag(s.author(), 1, now, "signed");
            let proofs = vec![s.prove(Hash::ZERO, std::slice::from_ref(&signed))];
            let mut sent = signed;
            sent.fields
                .insert("name".into(), Value::Text("not what was signed".into()));
            gossip(&Gossip::Ops {
                ops: vec![sent],
                proofs,
            })
        })
        .await,
    );
    // Absurd sequence numbers.
    for seq in [0, u64::MAX] {
        authors.push(
            refused_gossip(&secret, &n, "malformed", |s| {
                let me = s.author();
                signed_ops(s, vec![create_tag(me, seq, now, "seq")])
            })
            .await,
        );
    }
    // More ops than a node ever puts in one message.
    authors.push(
        refused_gossip(&secret, &n, "oversized", |s| {
            let me = s.author();
            signed_ops(
                s,
                (1..=513).map(|s| create_tag(me, s, now, "many")).collect(),
            )
        })
        .await,
    );
    // Version announcements with absurd seqs, or too many authors.
    authors.push(
        refused_gossip(&secret, &n, "malformed", |s| {
            let me = s.author();
            gossip(&Gossip::Versions {
                device: any_binding(),
                contiguous: (0..3u128)
                    .map(|i| (Uuid::from_u128(i + 1), u64::MAX))
                    .chain([(me, u64::MAX)])
                    .collect(),
                horizon: Default::default(),
                authors: None,
                schema: None,
                sent_at_ms: 0,
            })
        })
        .await,
    );
    authors.push(
        refused_gossip(&secret, &n, "oversized", |_| {
            gossip(&Gossip::Versions {
                device: any_binding(),
                contiguous: (0..5000u128).map(|i| (Uuid::from_u128(i + 1), 1)).collect(),
                horizon: Default::default(),
                authors: None,
                schema: None,
                sent_at_ms: 0,
            })
        })
        .await,
    );
    honest_write_still_syncs(&n, &a, &authors, "hostile gossip").await;
    // None of the fake authors of the refused announcements reached the client pool.
    let clients = n.node().store().clients().await.expect("clients");
    assert!(clients.iter().all(|c| c.client_uuid != Uuid::from_u128(1)));
}

/// A peer id names one run of a device, and an announcement says which device with a
/// binding signed by the device key. One that claims the honest peer's device, signed by
/// another key (the hostile peer's own), is refused, counted, penalised, and binds nothing:
/// no client of the pool takes the hostile peer id, the honest device keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_claiming_another_device_is_refused() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let victim = a.node().client_uuid();
    let h = Hostile::plain(&secret, &n).await;
    let hostile_peer = h.net.local_peer_id();
    // Signed over the hostile peer id, by a key that is not the device it names.
    let other_key = p2p::Keypair::generate_ed25519()
        .try_into_ed25519()
        .expect("an ed25519 key");
    let mut device = DeviceBinding::sign(&other_key, &hostile_peer);
    device.device = a.node().store().author_key().public;
    let msg = Gossip::Versions {
        device,
        contiguous: BTreeMap::from([(a.node().store().author(), 1)]),
        horizon: BTreeMap::new(),
        authors: None,
        schema: None,
        sent_at_ms: 1,
    };
    let before = n.rejected("bad_binding");
    let net_before = n.node().net_stats().gossip_rejected;
    let outcome = h.net.publish(gossip(&msg)).await.expect("publish");
    assert_eq!(outcome, p2p::PublishOutcome::Published);
    eventually(WAIT, "the binding counted as bad_binding", || async {
        n.rejected("bad_binding") > before
    })
    .await;
    eventually(WAIT, "the announcement reported Reject", || async {
        n.node().net_stats().gossip_rejected > net_before
    })
    .await;
    let clients = n.node().store().clients().await.expect("clients");
    let hostile_id = hostile_peer.to_string();
    assert!(
        clients
            .iter()
            .all(|c| c.peer_id.as_deref() != Some(hostile_id.as_str())),
        "the hostile peer id was bound to a client: {clients:?}"
    );
    let honest = clients
        .iter()
        .find(|c| c.client_uuid == victim)
        .expect("the honest device is in the pool");
    assert_eq!(
        honest.peer_id.as_deref(),
        Some(a.node().peer_id().to_string().as_str())
    );
    honest_write_still_syncs(&n, &a, &[h.author], "a claimed device").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gossip_is_refused_by_the_network_layer() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let max = p2p::config::DEFAULT_MAX_GOSSIP_BYTES;
    let h = Hostile::connect(
        &secret,
        &n,
        |c| c.max_gossip_bytes = 4 * max,
        Arc::new(|_| None),
    )
    .await;
    let before = n.node().net_stats();
    // Just over the node's limit: gossipsub delivers it, murmur_p2p refuses it (Reject).
    let outcome = h
        .net
        .publish(vec![0xa0; max + 1024])
        .await
        .expect("publish");
    assert_eq!(outcome, p2p::PublishOutcome::Published);
    eventually(WAIT, "oversized gossip rejected", || async {
        n.node().net_stats().gossip_rejected > before.gossip_rejected
    })
    .await;
    // Far over it: gossipsub's own frame limit drops it before it is a message.
    let _ = h.net.publish(vec![0xa0; 3 * max]).await;
    let author = h.author;
    honest_write_still_syncs(&n, &a, &[author], "oversized gossip").await;
    // The node's own decoder never saw either.
    assert_eq!(n.rejected("decode"), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_invalid_gossip_graylists_the_sender() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let now = n.node().store().clock().physical_now();
    let h = Hostile::plain(&secret, &n).await;
    // Three rejected messages (gossipsub's penalty is -10 times the square of the invalid
    // deliveries): the sender's score falls under the graylist threshold (-80) and its
    // messages are dropped until the penalty decays (about 10% a second).
    for i in 0..3 {
        let before = n.node().net_stats().gossip_rejected;
        h.net
            .publish(format!("garbage {i}").into_bytes())
            .await
            .expect("publish");
        eventually(WAIT, "rejected", || async {
            n.node().net_stats().gossip_rejected > before
        })
        .await;
    }
    // A valid op from the graylisted sender is not taken.
    let received = n.node().net_stats().gossip_received;
    let _ = h
        .net
        .publish(signed_ops(
            &h.signer,
            vec![create_tag(h.author, 1, now, "graylisted")],
        ))
        .await;
    honest_write_still_syncs(&n, &a, &[h.author], "graylisted sender").await;
    println!(
        "gossip received by the node after graylisting: {} (honest announcements included)",
        n.node().net_stats().gossip_received - received
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_far_ahead_are_refused_and_time_zero_loses_every_merge() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let now = n.node().store().clock().physical_now();
    let h = Hostile::plain(&secret, &n).await;
    let tag = a.create_tag("honest").await;
    let path = format!("/v1/shared/tags/{tag}");
    eventually(WAIT, "n has the tag", || async {
        n.get(&path).await.0 == 200
    })
    .await;
    let tag_uuid: Uuid = tag.parse().expect("uuid");

    // A day ahead: counted as drift, not applied, not penalised.
    let drift_before = n.rejected("drift");
    let net_rejected = n.node().net_stats().gossip_rejected;
    let future = create_tag(h.author, 1, now + (86_400u64 << 32), "from the future");
    let future_row = future.uuid.expect("uuid");
    h.net
        .publish(signed_ops(&h.signer, vec![future]))
        .await
        .expect("publish");
    eventually(WAIT, "drift counted", || async {
        n.rejected("drift") > drift_before
    })
    .await;
    assert_eq!(n.node().net_stats().gossip_rejected, net_rejected);
    assert_eq!(n.get(&format!("/v1/shared/tags/{future_row}")).await.0, 404);

    // Time 0: an old write. The rename loses against the honest create; the create of a new
    // row stands until a real write supersedes it.
    let mut rename = op(h.author, 1, 0, "tags", Method::SharedUpdate);
    rename.uuid = Some(tag_uuid);
    rename.property = Some("name".into());
    rename.value = Some(Value::Text("renamed at time 0".into()));
    let old_create = create_tag(h.author, 2, 0, "created at time 0");
    let old_row = old_create.uuid.expect("uuid");
    h.net
        .publish(signed_ops(&h.signer, vec![rename, old_create]))
        .await
        .expect("publish");
    let old_path = format!("/v1/shared/tags/{old_row}");
    eventually(WAIT, "the time-0 ops are applied", || async {
        n.node().store().version_vector().contiguous(&h.author) == 2
    })
    .await;
    assert_eq!(n.get(&path).await.1["name"], "honest");
    assert_eq!(n.get(&old_path).await.0, 200);
    // `a` gets the row too: the time-0 ops were accepted and forwarded by `n`.
    eventually(WAIT, "a has the time-0 row", || async {
        a.get(&old_path).await.0 == 200
    })
    .await;
    let (status, _) = a.patch(&old_path, json!({"name": "real"})).await;
    assert_eq!(status, 200);
    eventually(WAIT, "the real write wins on n", || async {
        n.get(&old_path).await.1["name"] == "real"
    })
    .await;
    converged(&[&n, &a], WAIT).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_or_clamped() {
    init_tracing();
    let (_sd, secret) = secret_file();
    // `n` keeps its log (a pruned log answers an empty version vector with
    // SnapshotRequired), so that it has more than a page of ops to serve.
    let (n, a) = pair_with(&secret, keep_log).await;
    many_owned_rows(&a, PAGE_SIZE + 1_000).await;
    converged(&[&n, &a], Duration::from_secs(60)).await;
    let h = Hostile::connect(
        &secret,
        &n,
        |c| c.max_request_bytes = 1024 * 1024,
        Arc::new(|_| None),
    )
    .await;

    // Not CBOR of a request, cut short, of the wrong types, too large: the codec refuses
    // each (the request fails) and counts it.
    let wrong_types = Wire::of(&json!({"OpsSince": {"have": "x", "cursor": 1, "limit": -1}}));
    for (what, req) in [
        ("bytes", Wire::bytes(b"\xff\xfe garbage")),
        ("truncated", Wire::Truncated),
        ("wrong types", wrong_types),
        ("oversized", Wire::bytes(&vec![7u8; 100 * 1024])),
    ] {
        let before = n.node().net_stats().rejected_requests;
        let res = ask(&h, &n, req).await;
        assert!(res.is_err(), "{what}: {res:?}");
        eventually(WAIT, "request refused by the codec", || async {
            n.node().net_stats().rejected_requests > before
        })
        .await;
    }

    let me = n.node().client_uuid();
    let ops_since = |have: VersionVector, cursor: OpsCursor, limit: u32| {
        Wire::of(&Request::OpsSince {
            have,
            cursor,
            limit,
            range: None,
        })
    };
    // Page sizes are clamped: 0 gives one item, u32::MAX about PAGE_SIZE.
    let page = |w: Wire| match w.decode::<Response>() {
        Some(Response::Ops { page, .. }) => page,
        other => panic!("expected a page of ops, got {other:?}"),
    };
    let one = page(
        ask(
            &h,
            &n,
            ops_since(VersionVector::default(), OpsCursor::default(), 0),
        )
        .await
        .expect("answer"),
    );
    assert_eq!(items(&one), 1);
    let big = page(
        ask(
            &h,
            &n,
            ops_since(VersionVector::default(), OpsCursor::default(), u32::MAX),
        )
        .await
        .expect("answer"),
    );
    // An owned batch's rows come in whole groups: a page stops before a group that would
    // not fit.
    let got = items(&big);
    assert!(
        got <= PAGE_SIZE && got > PAGE_SIZE - murmur::store::proof::GROUP_ROWS,
        "{got} items"
    );
    assert!(big.next.is_some());
    // Absurd seqs in the version vector and the cursor: an empty page, no panic.
    let mut have = VersionVector::default();
    have.authors.entry(me).or_default().contiguous = u64::MAX;
    for author in n.node().store().version_vector().authors.keys() {
        have.authors.entry(*author).or_default().contiguous = u64::MAX;
    }
    let cursor = OpsCursor {
        position: Some((me, u64::MAX)),
        row_after: Some((u64::MAX, Uuid::max())),
    };
    let empty = page(
        ask(&h, &n, ops_since(have, cursor, u32::MAX))
            .await
            .expect("answer"),
    );
    assert_eq!(items(&empty), 0);

    // Snapshot pages are clamped the same way.
    let snap = |position: Option<SnapshotPosition>, limit: u32| {
        Wire::of(&Request::Snapshot {
            position,
            limit,
            resume: false,
        })
    };
    let rows = |w: Wire| match w.decode::<Response>() {
        Some(Response::Snapshot { rows, .. }) => rows,
        other => panic!("expected a snapshot page, got {other:?}"),
    };
    assert_eq!(
        rows(ask(&h, &n, snap(None, 0)).await.expect("answer")).len(),
        1
    );
    assert_eq!(
        rows(ask(&h, &n, snap(None, u32::MAX)).await.expect("answer")).len(),
        PAGE_SIZE
    );
    // A position in a resource that does not exist: refused and counted.
    let before = n.rejected("bad_request");
    let bad = ask(
        &h,
        &n,
        snap(
            Some(SnapshotPosition {
                resource: "nope".into(),
                phase: 0,
                after: None,
            }),
            10,
        ),
    )
    .await
    .expect("answer");
    assert!(matches!(bad.decode::<Response>(), Some(Response::Error(_))));
    assert_eq!(n.rejected("bad_request"), before + 1);
    // An unknown phase of an owned resource: a (possibly empty) page, no panic.
    let odd = ask(
        &h,
        &n,
        snap(
            Some(SnapshotPosition {
                resource: "file_paths".into(),
                phase: 255,
                after: Some(Uuid::max()),
            }),
            u32::MAX,
        ),
    )
    .await
    .expect("answer");
    assert!(matches!(
        odd.decode::<Response>(),
        Some(Response::Snapshot { .. })
    ));

    honest_write_still_syncs(&n, &a, &[h.author], "hostile requests").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_gets_busy_answers_and_the_node_stays_responsive() {
    init_tracing();
    let (_sd, secret) = secret_file();
    // `n` keeps its log (a pruned log answers an empty version vector with
    // SnapshotRequired), so that it has more than a page of ops to serve.
    let (n, a) = pair_with(&secret, keep_log).await;
    many_owned_rows(&a, PAGE_SIZE + 1_000).await;
    converged(&[&n, &a], Duration::from_secs(60)).await;
    let h = Hostile::plain(&secret, &n).await;
    let rss_before = rss_kib();
    let busy_before = n.rejected("busy");
    const FLOOD: usize = 300;
    // Every request asks for the biggest page there is.
    let request = Wire::of(&Request::OpsSince {
        have: VersionVector::default(),
        cursor: OpsCursor::default(),
        limit: u32::MAX,
        range: None,
    });
    let target = n.node().peer_id();
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let net = h.net.clone();
            let req = request.clone();
            tokio::spawn(async move { net.request(target, req).await })
        })
        .collect();
    // While it floods, an honest write still goes through.
    let u = a.create_tag("during the flood").await;
    let path = format!("/v1/shared/tags/{u}");
    eventually(
        WAIT,
        "the honest write reaches n during the flood",
        || async { n.get(&path).await.0 == 200 },
    )
    .await;
    let (mut served, mut busy, mut failed) = (0, 0, 0);
    for f in flood {
        match f.await.expect("request task") {
            Ok(w) => match w.decode::<Response>() {
                Some(Response::Ops { page, .. }) => {
                    assert!(items(&page) <= PAGE_SIZE);
                    served += 1
                }
                Some(Response::Error(e)) if e.starts_with("busy") => busy += 1,
                other => panic!("unexpected answer {other:?}"),
            },
            Err(_) => failed += 1,
        }
    }
    let rss_after = rss_kib();
    println!(
        "flood of {FLOOD}: {served} served, {busy} busy, {failed} failed (stream limit); \
         RSS {} -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(busy > 0, "no request was refused as busy");
    assert!(served > 0, "no request was served");
    assert!(n.rejected("busy") >= busy_before + busy as u64);
    // Bounded: at most SERVE_CAP pages are built at once; far less than FLOOD pages.
    let page_bytes = 1_500 * 1024;
    assert!(
        rss_after.saturating_sub(rss_before) * 1024 < (FLOOD as u64 * page_bytes) / 2,
        "memory grew like the flood"
    );
    let _ = SERVE_CAP;
    honest_write_still_syncs(&n, &a, &[h.author], "request flood").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catch_up_pages_and_snapshots_are_checked() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let (status, _) = a
        .post(
            "/v1/owned/file_paths",
            json!([{"materialized_path": "/a", "name": "mine", "size_bytes": 1}]),
        )
        .await;
    assert_eq!(status, 201);
    converged(&[&n, &a], WAIT).await;
    let (_, listed) = a.get("/v1/owned/file_paths").await;
    let owned_row: Uuid = listed["rows"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|r| r["uuid"].as_str())
        .expect("an owned row")
        .parse()
        .expect("uuid");
    let now = n.node().store().clock().physical_now();

    let a_author = a.node().store().author();
    let a_seq = a.node().store().version_vector().contiguous(&a_author);
    let n_author = n.node().store().author();
    let n_seq = n.node().store().version_vector().contiguous(&n_author);
    let delete_as = |author: Uuid, seq: u64| {
        let mut d = op(author, seq, now, "file_paths", Method::OwnedDelete);
        d.uuid = Some(owned_row);
        d
    };
    // Catch-up pages (the answer to the node's pull on connection) from a member that
    // holds the secret and signs what it likes with its own key.
    let forger = Signer::new_incarnation(murmur_testkit::device_key(0xf0f0));
    let mine = delete_as(forger.author(), 1);
    let cases: Vec<(&str, OpsPage)> = vec![
        // The real owner's next op, with no proof at all.
        (
            "unproven",
            OpsPage {
                changes: vec![Change::Op(delete_as(a_author, a_seq + 1))],
                ..OpsPage::default()
            },
        ),
        // The real owner's next op under the forger's valid proof of its own op.
        (
            "unproven",
            OpsPage {
                changes: vec![Change::Op(delete_as(a_author, a_seq + 1))],
                proofs: vec![forger.prove(Hash::ZERO, std::slice::from_ref(&mine))],
                ..OpsPage::default()
            },
        ),
        // A squatted future seq of the real owner, "proven" with the owner's key and the
        // forger's signature.
        (
            "bad_proof",
            OpsPage {
                changes: vec![Change::Op(delete_as(a_author, a_seq + 50))],
                proofs: vec![Proof {
                    key: a.node().store().author_key(),
                    first: a_seq + 50,
                    ..forger.prove(Hash::ZERO, std::slice::from_ref(&mine))
                }],
                ..OpsPage::default()
            },
        ),
        // An op "authored" by the receiver itself.
        (
            "own_author",
            OpsPage {
                changes: vec![Change::Op(delete_as(n_author, n_seq + 1))],
                ..OpsPage::default()
            },
        ),
        // The forger's own, properly signed delete of a row it does not own.
        (
            "not_owner",
            OpsPage {
                changes: vec![Change::Op(mine.clone())],
                proofs: vec![forger.prove(Hash::ZERO, std::slice::from_ref(&mine))],
                ..OpsPage::default()
            },
        ),
    ];
    for (reason, page) in cases {
        let before = n.rejected(reason);
        let refused_before = n.node().metrics().peers_refused.get();
        let forged_page = Wire::of(&Response::Ops {
            page,
            server: BTreeMap::from([(a_author, a_seq + 100)]),
        });
        let h = Hostile::connect(
            &secret,
            &n,
            |_| {},
            Arc::new(move |_| Some(forged_page.clone())),
        )
        .await;
        eventually(
            WAIT,
            &format!("the forged page is refused as {reason}"),
            || async { n.rejected(reason) > before },
        )
        .await;
        // A failing proof or the node's own author can only come from a forger (honest
        // peers verify all they hold): it is refused for its run.
        if matches!(reason, "bad_proof" | "own_author") {
            eventually(WAIT, &format!("the {reason} sender is refused"), || async {
                n.node().metrics().peers_refused.get() > refused_before
            })
            .await;
        }
        h.stop().await;
        assert_eq!(
            n.get(&format!("/v1/owned/file_paths/{owned_row}")).await.0,
            200,
            "{reason}: the owner's row stays"
        );
        let vv = n.node().store().version_vector();
        assert_eq!(
            vv.contiguous(&a_author),
            a_seq,
            "{reason}: the owner's seq stays"
        );
        assert_eq!(
            vv.contiguous(&n_author),
            n_seq,
            "{reason}: the node's own seq stays"
        );
    }

    // A response that is not a response: the codec refuses it and counts it.
    let bad_responses = n.node().net_stats().rejected_responses;
    let h = Hostile::connect(
        &secret,
        &n,
        |_| {},
        Arc::new(|_| Some(Wire::bytes(b"not a response"))),
    )
    .await;
    eventually(WAIT, "the bad response is refused", || async {
        n.node().net_stats().rejected_responses > bad_responses
    })
    .await;
    assert!(h.requests.load(Ordering::SeqCst) > 0);
    h.stop().await;

    // Snapshot pages: a row with a register far in the future is set aside (it would win
    // every merge for good), and the authors of its registers are left uncovered.
    let store = n.node().store();
    let future = SnapshotRow::Shared {
        resource: "tags".into(),
        uuid: Uuid::now_v7(),
        exists_ts: Hlc {
            time: u64::MAX,
            author: forger.author(),
        },
        alive: true,
        props: vec![],
    };
    let imported = store
        .import_snapshot_page(vec![future])
        .await
        .expect("a page with a register from the future");
    assert_eq!((imported.imported, imported.set_aside), (0, 1));
    assert!(imported.uncovered.contains(&forger.author()));
    // A snapshot's claims: the owner's log at MAX_SEQ under the forger's signature, and the
    // receiver's own author at MAX_SEQ. Neither moves the version vector.
    let claim = |author_key: AuthorKey| Proof {
        key: author_key,
        first: MAX_SEQ,
        len: 0,
        prev: Hash::ZERO,
        tail: vec![],
        sig: forger.prove(Hash::ZERO, std::slice::from_ref(&mine)).sig,
    };
    let owner_key = AuthorKey {
        public: a.node().store().author_key().public,
        nonce: 0,
    };
    let refused = store
        .finish_snapshot(vec![
            claim(owner_key),
            claim(a.node().store().author_key()),
            claim(forger.key()),
            claim(store.author_key()),
        ])
        .await
        .expect("finish");
    assert_eq!(refused.len(), 4, "{refused:?}");
    let reasons: Vec<RejectReason> = refused.iter().map(|(_, r)| r.reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            RejectReason::BadProof,
            RejectReason::BadProof,
            RejectReason::BadProof,
            RejectReason::OwnAuthor
        ]
    );
    let vv = store.version_vector();
    assert_eq!(vv.contiguous(&a_author), a_seq);
    assert_eq!(vv.contiguous(&forger.author()), 1, "only its one signed op");
    assert_eq!(vv.contiguous(&n_author), n_seq);

    // Only the forger's own signed delete is in the log (refused by the merge rule, logged
    // so that no replica sees a gap); the state is the honest peer's.
    honest_write_still_syncs(&n, &a, &[], "hostile catch-up").await;
}

/// The pages of an owned batch's rows are checked against its header, whoever serves
/// them: a member that answers the node's pulls with the real owner's batch with a row
/// added, a value changed, a row dropped, or rows of another batch mixed in, is refused
/// each time (`bad_proof`), and nothing of its page is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_owned_batch_pages_are_checked_against_their_header() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let (n, a) = pair(&secret).await;
    let batch: Vec<serde_json::Value> = (0..300)
        .map(|i| json!({"materialized_path": format!("/b/{i}"), "name": format!("b{i}"), "size_bytes": i}))
        .collect();
    let (status, _) = a.post("/v1/owned/file_paths", json!(batch)).await;
    assert_eq!(status, 201);
    let (status, _) = a
        .post(
            "/v1/owned/file_paths",
            json!([{"materialized_path": "/other", "name": "other", "size_bytes": 1}]),
        )
        .await;
    assert_eq!(status, 201);
    converged(&[&n, &a], WAIT).await;
    let store = a.node().store();
    let a_author = store.author();
    let a_vv = store.version_vector();
    let a_seq = a_vv.contiguous(&a_author);
    // The owner's pages from its first batch on (the big one, then the other).
    let mut from = a_vv.clone();
    from.authors.entry(a_author).or_default().contiguous = a_seq - 2;
    from.authors.get_mut(&a_author).expect("a").extra.clear();
    let page = store
        .ops_since(&from, &OpsCursor::default(), 1000)
        .await
        .expect("ops_since");
    assert_eq!(page.changes.len(), 2, "the two batches");
    fn rows(p: &mut OpsPage, i: usize) -> &mut Vec<murmur::store::OwnedRow> {
        match &mut p.changes[i] {
            Change::OwnedRows { rows, .. } => rows,
            Change::Op(_) => panic!("a page of rows"),
        }
    }
    let other = rows(&mut page.clone(), 1)[0].clone();
    let mut cases: Vec<(&str, OpsPage)> = Vec::new();
    let mut p = page.clone();
    let mut extra = rows(&mut p, 0)[0].clone();
    extra.uuid = Uuid::now_v7();
    rows(&mut p, 0).push(extra);
    cases.push(("a row added", p));
    let mut p = page.clone();
    rows(&mut p, 0)[3].values[1] = Value::Text("forged".into());
    cases.push(("a value changed", p));
    let mut p = page.clone();
    rows(&mut p, 0).remove(40);
    cases.push(("a row dropped", p));
    let mut p = page.clone();
    rows(&mut p, 0).push(other);
    rows(&mut p, 0).sort_by_key(|r| r.uuid);
    cases.push(("a row of another batch mixed in", p));
    let digest = n.node().store().digest().await.expect("digest");
    for (what, page) in cases {
        let before = n.rejected("bad_proof");
        let forged_page = Wire::of(&Response::Ops {
            page,
            server: a_vv.contiguous_map(),
        });
        let h = Hostile::connect(
            &secret,
            &n,
            |_| {},
            Arc::new(move |_| Some(forged_page.clone())),
        )
        .await;
        eventually(WAIT, &format!("{what}: refused as bad_proof"), || async {
            n.rejected("bad_proof") > before
        })
        .await;
        h.stop().await;
        assert_eq!(
            n.node().store().digest().await.expect("digest"),
            digest,
            "{what}: nothing of the page applied"
        );
    }
    honest_write_still_syncs(&n, &a, &[], "hostile owned pages").await;
}
