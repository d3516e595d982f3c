//! Restores and clones lose nothing (issue 17, item 3), with the built binary: a node's
//! data dir is copied as a user copies it (a backup, or a second machine set up from one),
//! restored or run beside the original, and every write any node acknowledged must end on
//! every node, with one digest.
//!
//! `n1` is the node whose data dir is copied, `n2` its peer (it dials `n1`), `n1b` a clone
//! of `n1` (the same device key, so the same device; each run writes under an author of its
//! own and has a peer id of its own). Every wait polls with the testkit's deadline; a failure names, per node, its digest, version vector and the rows
//! it lacks.

use murmur_testkit::datadir::{copy_data_dir, restore_data_dir};
use murmur_testkit::holding::Want;
use murmur_testkit::procs::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const N1: usize = 0;
const N2: usize = 1;

/// How a node is stopped before its data dir is copied or replaced.
#[derive(Debug, Clone, Copy)]
enum Halt {
    /// SIGTERM: the node drains and exits.
    Clean,
    /// SIGKILL: the copy is of a crashed node (the WAL not checkpointed).
    Crash,
}

async fn halt(c: &mut Cluster, i: usize, how: Halt) {
    match how {
        Halt::Clean => c.procs[i].stop().await,
        Halt::Crash => c.procs[i].kill9(),
    }
}

/// Creates tags `{prefix}-0` … on node `i`; each must be acknowledged. Returns their names.
async fn write_tags(c: &Cluster, i: usize, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for k in 0..n {
        let name = format!("{prefix}-{k}");
        let (s, b) = c.post(i, "/v1/shared/tags", json!({"name": name})).await;
        assert_eq!(s, 201, "node {i}: tag {name} not acknowledged: {b}");
        names.push(name);
    }
    names
}

/// Creates one file_path (an owned row) named `name` on node `i`; it must be acknowledged.
async fn write_file_path(c: &Cluster, i: usize, name: &str) -> String {
    let row = json!([{"materialized_path": "/photos/", "name": name, "size_bytes": 1}]);
    let (s, b) = c.post(i, "/v1/owned/file_paths", row).await;
    assert_eq!(s, 201, "node {i}: file_path {name} not acknowledged: {b}");
    name.to_owned()
}

/// Prints what each node holds (the figures a failing run reports are in its panic).
async fn show(c: &Cluster, when: &str, nodes: &[(&str, usize)]) {
    for &(label, i) in nodes {
        let h = c.holding(i).await;
        println!(
            "{when}: {label}: digest {}, version vector {}, {} peer(s), {} tags, {} file_paths",
            h.digest,
            h.version_vector,
            h.connected,
            h.tags.len(),
            h.file_paths.len()
        );
    }
}

/// n1 and n2 in sync, with tags of both; returns them.
async fn two_in_sync() -> (Cluster, Want) {
    let c = Cluster::start(BIN, 2).await;
    poll("n1 and n2 connected", || async {
        c.connected(N1).await == 1
    })
    .await;
    let mut want = Want::default();
    want.tags
        .extend(write_tags(&c, N1, "n1-before-backup", 3).await);
    want.tags
        .extend(write_tags(&c, N2, "n2-before-backup", 2).await);
    c.converge_holding(&[("n1", N1), ("n2", N2)], &want).await;
    (c, want)
}

/// When the restored node writes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Writes {
    /// As soon as it answers, as an app would (before it reconnects to n2).
    AtOnce,
    /// Once it holds again what it wrote after the backup (pulled back from n2).
    AfterCatchUp,
}

/// The backup scenario of issue 17: n1's data dir backed up; n1 writes 5 tags, they reach
/// n2; n1's data dir replaced by the backup; n1 writes 5 more. Both must hold all 10.
async fn backup_and_restore(how: Halt, when: Writes) {
    let (mut c, mut want) = two_in_sync().await;
    let both = [("n1", N1), ("n2", N2)];

    halt(&mut c, N1, how).await;
    let backup = c.dir.path().join("n1-backup");
    copy_data_dir(&c.procs[N1].data, &backup);
    c.restart(N1).await;
    want.tags
        .extend(write_tags(&c, N1, "after-backup", 5).await);
    c.converge_holding(&both, &want).await;
    show(&c, "before the restore", &both).await;

    halt(&mut c, N1, how).await;
    restore_data_dir(&backup, &c.procs[N1].data);
    c.restart(N1).await;
    show(&c, "restored, before writing", &both).await;
    if when == Writes::AfterCatchUp {
        c.converge_holding(&both, &want).await;
    }
    want.tags
        .extend(write_tags(&c, N1, "after-restore", 5).await);
    show(&c, "restored, after writing", &both).await;
    c.converge_holding(&both, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_after_a_clean_stop_and_restored_loses_no_write() {
    backup_and_restore(Halt::Clean, Writes::AtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_after_a_crash_and_restored_loses_no_write() {
    backup_and_restore(Halt::Crash, Writes::AtOnce).await;
}

/// The restored node first gets back from n2 what it wrote after the backup, then writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_that_catches_up_before_writing_loses_no_write() {
    backup_and_restore(Halt::Clean, Writes::AfterCatchUp).await;
}

/// The backup restored while n1's only peer is offline: n1 writes before any peer can tell
/// it what it wrote after the backup; then n2 comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_while_the_peers_are_offline_loses_no_write() {
    let (mut c, mut want) = two_in_sync().await;
    let both = [("n1", N1), ("n2", N2)];

    c.procs[N1].stop().await;
    let backup = c.dir.path().join("n1-backup");
    copy_data_dir(&c.procs[N1].data, &backup);
    c.restart(N1).await;
    want.tags
        .extend(write_tags(&c, N1, "after-backup", 5).await);
    c.converge_holding(&both, &want).await;

    c.procs[N2].stop().await;
    c.procs[N1].stop().await;
    restore_data_dir(&backup, &c.procs[N1].data);
    c.restart(N1).await;
    want.tags
        .extend(write_tags(&c, N1, "after-restore", 5).await);
    c.restart(N2).await;
    show(&c, "n2 back", &both).await;
    c.converge_holding(&both, &want).await;
}

/// A second machine set up from n1's data dir (n1b: the same device key, so the same
/// device) runs beside n1; both reach n2, and can reach each other only through
/// it. Each of n1 and n1b writes tags and one owned row; all three must hold all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_data_dir_run_beside_its_original_loses_no_write() {
    let (mut c, mut want) = two_in_sync().await;

    c.procs[N1].stop().await;
    let clone = c.dir.path().join("n1b");
    copy_data_dir(&c.procs[N1].data, &clone);
    // Both copies dial n2, as mDNS would have them find it. Each run has a peer id of its
    // own, so n2 takes them for two peers (were it the device key's, n2 would take n1b's
    // connection for a second one of n1's and send it nothing).
    let n2_port = c.procs[N2].p2p;
    c.procs[N1].peers = vec![n2_port];
    c.restart(N1).await;
    let n1b = c.add_node(clone, vec![n2_port]).await;
    let all = [("n1", N1), ("n2", N2), ("n1b", n1b)];
    show(&c, "clone started", &all).await;

    want.tags
        .extend(write_tags(&c, N1, "n1-after-clone", 5).await);
    want.tags
        .extend(write_tags(&c, n1b, "n1b-after-clone", 5).await);
    want.tags
        .extend(write_tags(&c, N2, "n2-after-clone", 1).await);
    want.file_paths
        .insert(write_file_path(&c, N1, "n1-file").await);
    want.file_paths
        .insert(write_file_path(&c, n1b, "n1b-file").await);
    show(&c, "after the writes", &all).await;
    c.converge_holding(&all, &want).await;
}
