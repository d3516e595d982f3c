//! mDNS discovery between processes, each in its own network namespace.
//!
//! The test creates a bridge namespace and three peer namespaces joined to it by veth
//! pairs (created directly inside the namespaces, so nothing appears on the host's
//! interfaces), then runs this very test binary in each peer namespace, with an environment
//! variable that turns `mdns_peer_child` into a murmur peer with mDNS on and no configured
//! peers. Each child prints `MDNS-ID <peer id>` and then `MDNS-PEER <peer id> <discovery>` for each
//! connection; the test waits, with a deadline, until every child reports the two others.
//!
//! Needs root and the `ip` tool; elsewhere it prints why and passes as skipped.

mod netns;

use std::{
    io::{BufRead, BufReader, Read},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use netns::{Lab, skip_reason};

const CHILD_ENV: &str = "MURMUR_P2P_MDNS_CHILD";
const PEERS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Line {
    Id(usize, String),
    Peer(usize, String),
}

#[test]
fn mdns_discovery_in_network_namespaces() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    if let Some(why) = skip_reason() {
        println!("SKIPPED mdns_discovery_in_network_namespaces: {why}");
        return;
    }
    let mut lab = match Lab::build("mp2p", PEERS, "10.213.0") {
        Ok(lab) => lab,
        Err(e) => {
            println!("SKIPPED mdns_discovery_in_network_namespaces: cannot create namespaces: {e}");
            return;
        }
    };
    let exe = std::env::current_exe().expect("the test binary has a path");
    let (tx, rx) = mpsc::channel();
    for i in 1..=PEERS {
        let mut child = lab
            .command(i, &exe.to_string_lossy())
            .args([
                "mdns_peer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a child in its namespace");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        lab.children.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness may print "test mdns_peer_child ... " on the same line.
                let word_after = |marker: &str| {
                    line.find(marker).and_then(|at| {
                        line[at + marker.len()..]
                            .split_whitespace()
                            .next()
                            .map(str::to_owned)
                    })
                };
                let parsed = if let Some(id) = word_after("MDNS-ID ") {
                    Line::Id(i, id)
                } else if let Some(id) = word_after("MDNS-PEER ") {
                    Line::Peer(i, id)
                } else {
                    continue;
                };
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            if !text.trim().is_empty() {
                eprintln!("child {i} stderr:\n{text}");
            }
        });
    }
    drop(tx);

    let start = Instant::now();
    let mut ids: Vec<Option<String>> = vec![None; PEERS + 1];
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); PEERS + 1];
    let done = |ids: &[Option<String>], seen: &[Vec<String>]| {
        (1..=PEERS).all(|i| {
            (1..=PEERS)
                .filter(|j| *j != i)
                .all(|j| ids[j].as_ref().is_some_and(|id| seen[i].contains(id)))
        })
    };
    while !done(&ids, &seen) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(Line::Id(i, id)) => ids[i] = Some(id),
            Ok(Line::Peer(i, id)) => seen[i].push(id),
            Err(e) => panic!(
                "after {:?} ({e}): ids {ids:?}, connections {seen:?}",
                start.elapsed()
            ),
        }
    }
    println!(
        "all {PEERS} peers found each other by mDNS in {:?}",
        start.elapsed()
    );
    // No duplicate connection: each child reports each other peer once (only the smaller
    // id dials).
    for (i, peers) in seen.iter().enumerate().skip(1) {
        let mut unique = peers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            peers.len(),
            "child {i} reported a peer twice: {peers:?}"
        );
    }
}

/// Runs a peer when started by `mdns_discovery_in_network_namespaces`; otherwise a no-op.
#[test]
fn mdns_peer_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Exit when the parent goes away (our stdin closes), or after the deadline.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let keypair = murmur_p2p::Keypair::generate_ed25519();
        let mut config = murmur_p2p::Config::new(keypair, [42; 32], "murmur-mdns-test");
        config.mdns = true;
        config.mdns_query_interval = Duration::from_secs(1);
        let (handle, mut events) =
            murmur_p2p::spawn::<Vec<u8>, Vec<u8>>(config).expect("spawn the swarm");
        println!("MDNS-ID {}", handle.local_peer_id());
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(event) = events.recv().await {
                match event {
                    murmur_p2p::Event::PeerConnected {
                        peer_id, discovery, ..
                    } => println!("MDNS-PEER {peer_id} {discovery}"),
                    murmur_p2p::Event::ConnectionFailed { reason, .. } => {
                        eprintln!("connection failed: {reason}")
                    }
                    _ => {}
                }
            }
        })
        .await;
    });
}
