//! Membership (issue 19): invite a device, list the devices, remove one. Several nodes in
//! one process, loopback, mDNS off.

use std::path::Path;
use std::time::Duration;

use murmur_node::protocol::{Request, Response};
use murmur_node::sync::serve_request;
use murmur_node::{JoinStatus, JoinWith};
use murmur_store::members::Standing;
use murmur_store::{OpsCursor, Origin, RejectReason};
use murmur_testkit::*;
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn founder(secret: &Path, name: &str) -> TestNode {
    let name = name.to_owned();
    TestNode::new_with(secret, move |c| {
        c.found = true;
        c.device_name = Some(name);
    })
    .await
}

async fn invited(secret: &Path, inv: murmur_node::invite::Invitation, name: &str) -> TestNode {
    let name = name.to_owned();
    TestNode::new_with(secret, move |c| {
        c.join = Some(JoinWith::Invitation(Box::new(inv)));
        c.device_name = Some(name);
    })
    .await
}

async fn wait_joined(n: &TestNode) {
    eventually(WAIT, "the device is admitted", || async {
        n.node().join_status() == JoinStatus::Joined
    })
    .await;
}

/// A member invites a device and waits until it is admitted.
async fn invite_and_join(secret: &Path, member: &TestNode, name: &str) -> TestNode {
    let inv = member
        .node()
        .invite(Duration::from_secs(3600))
        .await
        .unwrap();
    let n = invited(secret, inv, name).await;
    wait_joined(&n).await;
    n
}

async fn state_of(n: &TestNode, client: Uuid) -> Option<String> {
    let d = n.node().devices().await.unwrap();
    d.devices
        .into_iter()
        .find(|r| r.client == client)
        .map(|r| r.state)
}

async fn wait_state(n: &TestNode, client: Uuid, state: &str) {
    eventually(WAIT, &format!("the device is {state}"), || async {
        state_of(n, client).await.as_deref() == Some(state)
    })
    .await;
}

async fn tags(n: &TestNode) -> usize {
    n.get("/v1/shared/tags").await.1["rows"]
        .as_array()
        .map_or(0, |r| r.len())
}

async fn connected(n: &TestNode, other: &TestNode) -> bool {
    let peer = other.node().peer_id();
    n.node()
        .devices()
        .await
        .unwrap()
        .devices
        .iter()
        .any(|d| d.connected && d.peer_id == Some(peer.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_device_joins_and_converges() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    a.create_tag("before").await;
    let b = invite_and_join(&secret, &a, "phone").await;
    let u = b.create_tag("from the phone").await;
    eventually(WAIT, "the phone's tag reaches the laptop", || async {
        a.get(&format!("/v1/shared/tags/{u}")).await.0 == 200
    })
    .await;
    converged(&[&a, &b], WAIT).await;
    assert_eq!(tags(&b).await, 2);
    // Both list both, with names and who admitted whom.
    for n in [&a, &b] {
        let d = n.node().devices().await.unwrap();
        assert!(d.enforced);
        assert_eq!(d.founder, Some(a.node().client_uuid()));
        let phone = d
            .devices
            .iter()
            .find(|r| r.client == b.node().client_uuid())
            .expect("the phone is listed");
        assert_eq!(
            (phone.name.as_str(), phone.state.as_str()),
            ("phone", "member")
        );
        assert_eq!(phone.admitted_by, Some(a.node().client_uuid()));
        assert!(phone.admitted_at.is_some());
        let laptop = d
            .devices
            .iter()
            .find(|r| r.client == a.node().client_uuid())
            .expect("the laptop is listed");
        assert_eq!(laptop.name, "laptop");
    }
    // The API lists them too.
    let (status, body) = a.get("/v1/devices").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"].as_array().map(|d| d.len()), Some(2));
    // The devices log is murmur's own: the API refuses writes to it.
    let (status, _) = a
        .post("/v1/shared/devices_log", json!({"event": "00"}))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_the_secret_only_gets_nothing_and_reaches_no_one() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    a.create_tag("members only").await;
    let b = invite_and_join(&secret, &a, "phone").await;
    // Holds the secret, never admitted.
    let stranger = TestNode::new(&secret).await;
    stranger.connect(&a).await;
    stranger.connect(&b).await;
    let sc = stranger.node().client_uuid();
    wait_state(&a, sc, "refused").await;
    wait_state(&b, sc, "refused").await;
    assert!(a.rejected("not_member") > 0);
    // Its write reaches no member; the members' writes do not reach it.
    let x = stranger.create_tag("from a stranger").await;
    let y = a.create_tag("after the stranger came").await;
    eventually(WAIT, "the members converge", || async {
        b.get(&format!("/v1/shared/tags/{y}")).await.0 == 200
    })
    .await;
    converged(&[&a, &b], WAIT).await;
    for n in [&a, &b] {
        assert_eq!(n.get(&format!("/v1/shared/tags/{x}")).await.0, 404);
    }
    assert_eq!(
        tags(&stranger).await,
        1,
        "the stranger holds only its own write"
    );
    assert_eq!(stranger.get(&format!("/v1/shared/tags/{y}")).await.0, 404);
    // It is not a client of the pool: it holds nothing back from pruning.
    let (_, st) = a.get("/v1/status").await;
    assert!(
        !st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["client_uuid"] == json!(sc)),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_refused_and_its_later_ops_rejected_everywhere() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    let b = invite_and_join(&secret, &a, "desktop").await;
    let c = invite_and_join(&secret, &a, "lost phone").await;
    b.connect(&c).await;
    let before = c.create_tag("before the loss").await;
    for n in [&a, &b] {
        eventually(WAIT, "the phone's tag arrives", || async {
            n.get(&format!("/v1/shared/tags/{before}")).await.0 == 200
        })
        .await;
    }
    let cc = c.node().client_uuid();
    let (status, body) = a.delete(&format!("/v1/devices/{cc}")).await;
    assert_eq!(status, 200, "{body}");
    for n in [&a, &b] {
        wait_state(n, cc, "removed").await;
        eventually(WAIT, "the removed device is disconnected", || async {
            !connected(n, &c).await
        })
        .await;
    }
    // Its writes made before the removal stay; what it writes now reaches no one.
    let after = c.create_tag("after the loss").await;
    let y = a.create_tag("after the removal").await;
    eventually(WAIT, "the members converge", || async {
        b.get(&format!("/v1/shared/tags/{y}")).await.0 == 200
    })
    .await;
    for n in [&a, &b] {
        assert_eq!(n.get(&format!("/v1/shared/tags/{before}")).await.0, 200);
        assert_eq!(n.get(&format!("/v1/shared/tags/{after}")).await.0, 404);
    }
    assert_eq!(c.get(&format!("/v1/shared/tags/{y}")).await.0, 404);
    // Its later ops relayed by a third node (here: its page of ops, as a relay serves
    // them, applied on each member): refused, counted as removed.
    let page = match serve_request(
        c.node().store(),
        Request::OpsSince {
            have: a.node().store().version_vector(),
            cursor: OpsCursor::default(),
            limit: 5000,
            range: None,
        },
    )
    .await
    .unwrap()
    {
        Response::Ops { page, .. } => page,
        other => panic!("{other:?}"),
    };
    for n in [&a, &b] {
        let report = n
            .node()
            .store()
            .apply_signed(page.changes.clone(), page.proofs.clone(), Origin::Gossip)
            .await
            .unwrap();
        assert!(
            report
                .rejected
                .iter()
                .any(|(_, r)| r.reason == RejectReason::Removed),
            "{report:?}"
        );
        assert_eq!(n.get(&format!("/v1/shared/tags/{after}")).await.0, 404);
    }
    // Pruning proceeds without it: the members' logs empty once both hold every op.
    converged(&[&a, &b], WAIT).await;
    for n in [&a, &b] {
        eventually(WAIT, "the log is pruned", || async {
            n.node().store().pending_operations().await.unwrap() == 0
        })
        .await;
    }
    // It stays refused when it comes back (a new run, a new peer id).
    let mut c = c;
    c.restart_with(|_| {}).await;
    c.connect(&a).await;
    let new_run = c.node().peer_id().to_string();
    eventually(WAIT, "the new run is refused", || async {
        a.node().devices().await.unwrap().devices.iter().any(|d| {
            d.client == cc
                && d.refused.is_some()
                && !d.connected
                && d.peer_id.as_deref() == Some(new_run.as_str())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_data_deletes_its_owned_rows_and_files_everywhere() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    let b = invite_and_join(&secret, &a, "desktop").await;
    let c = invite_and_join(&secret, &a, "sold phone").await;
    let rows: Vec<_> = (0..20)
        .map(|i| {
            json!({"materialized_path": "/p/", "name": format!("f{i}"), "extension": "jpg",
                   "size_bytes": 10, "cas_id": format!("c{i}")})
        })
        .collect();
    let (status, body) = c.post("/v1/owned/file_paths", json!(rows)).await;
    assert_eq!(status, 201, "{body}");
    let mine = b.create_tag("kept").await;
    let files = |n: &TestNode| {
        let n = n.node().store().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM files")
                .fetch_one(n.pool())
                .await
                .unwrap()
        }
    };
    for n in [&a, &b] {
        eventually(WAIT, "the phone's files arrive", || async {
            files(n).await == 20
        })
        .await;
    }
    let (status, body) = a
        .delete(&format!(
            "/v1/devices/{}?forget_data=true",
            c.node().client_uuid()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    for n in [&a, &b] {
        eventually(WAIT, "its rows and files are deleted", || async {
            let paths = n.get("/v1/owned/file_paths").await.1["rows"]
                .as_array()
                .map_or(usize::MAX, |r| r.len());
            paths == 0 && files(n).await == 0
        })
        .await;
        assert_eq!(n.get(&format!("/v1/shared/tags/{mine}")).await.0, 200);
    }
    converged(&[&a, &b], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_removing_each_other_end_the_same_everywhere() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    let d = invite_and_join(&secret, &a, "desktop").await;
    let b = invite_and_join(&secret, &a, "tablet").await;
    let c = invite_and_join(&secret, &a, "phone").await;
    d.connect(&b).await;
    d.connect(&c).await;
    for n in [&a, &d, &b, &c] {
        for x in [&b, &c] {
            wait_state(n, x.node().client_uuid(), "member").await;
        }
    }
    let (bc, cc) = (b.node().client_uuid(), c.node().client_uuid());
    let (cs, bs) = (cc.to_string(), bc.to_string());
    let (rb, rc) = tokio::join!(
        b.node().remove_device(&cs, false),
        c.node().remove_device(&bs, false)
    );
    rb.unwrap();
    rc.unwrap();
    for n in [&a, &d] {
        wait_state(n, bc, "removed").await;
        wait_state(n, cc, "removed").await;
    }
    let (ma, md) = (a.node().store().members(), d.node().store().members());
    assert_eq!(*ma, *md);
    assert!(matches!(ma.standing(&bc), Standing::Removed(_)));
    assert!(matches!(ma.standing(&cc), Standing::Removed(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_used_invitation_is_refused_with_a_clear_message() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let a = founder(&secret, "laptop").await;
    let inv = a.node().invite(Duration::from_secs(3600)).await.unwrap();
    let b = invited(&secret, inv.clone(), "phone").await;
    wait_joined(&b).await;
    // The same invitation again, by another device: refused.
    let c = invited(&secret, inv, "thief").await;
    eventually(WAIT, "the reused invitation is refused", || async {
        matches!(c.node().join_status(), JoinStatus::Failed(m) if m.contains("already used"))
    })
    .await;
    // An invitation past its expiry: refused.
    let short = a.node().invite(Duration::from_millis(1)).await.unwrap();
    let now = || murmur_node::devices::time_to_ntp(chrono::Utc::now());
    eventually(WAIT, "the invitation expires", || async {
        now() > short.expires
    })
    .await;
    let late = invited(&secret, short, "late").await;
    eventually(WAIT, "the expired invitation is refused", || async {
        matches!(late.node().join_status(), JoinStatus::Failed(m) if m.contains("expired"))
    })
    .await;
    let (_, st) = late.get("/v1/status").await;
    assert_eq!(st["join"]["state"], "failed", "{st}");
    assert!(
        st["join"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{st}"
    );
    for n in [&c, &late] {
        assert_eq!(
            a.node().store().members().standing(&n.node().client_uuid()),
            Standing::NotMember
        );
        assert_eq!(tags(n).await, 0);
    }
}
