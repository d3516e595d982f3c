//! mDNS discovery with the `murmur` binary: three `murmur run` processes, each in a network
//! namespace this test creates (veth pairs onto a bridge that lives in its own namespace,
//! so nothing appears on the host's interfaces), mDNS on and no configured peers. They must
//! find and connect to each other, and a write on one must reach the others.
//!
//! Needs root and `ip`; elsewhere it prints why and passes as skipped.

#[path = "../crates/p2p/tests/netns/mod.rs"]
mod netns;

use netns::Lab;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const NODES: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

fn skip_reason() -> Option<String> {
    if let Some(why) = netns::skip_reason() {
        return Some(why);
    }
    if !Command::new("python3")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("no python3 to talk HTTP inside the namespaces".into());
    }
    None
}

/// The API token every node of the test uses (`--api-token-file`).
const TOKEN: &str = "mdns-process-test-token-0123456789abcdef";

/// Writes a file readable by its owner only (the node refuses a secret others may read).
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write private file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// An HTTP call to the node inside namespace `i`, through python3 run in that namespace.
fn http(lab: &Lab, i: usize, method: &str, path: &str, body: Option<&str>) -> Option<J> {
    let script = r#"
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:7700" + sys.argv[3], method=sys.argv[2],
                             data=sys.argv[4].encode() if len(sys.argv) > 4 else None,
                             headers={"content-type": "application/json",
                                      "authorization": "Bearer " + sys.argv[1]})
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except Exception as e:
    print("null")
"#;
    let mut cmd = lab.command(i, "python3");
    cmd.args(["-c", script, TOKEN, method, path]);
    if let Some(b) = body {
        cmd.arg(b);
    }
    let out = cmd.output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn murmur_nodes_find_each_other_by_mdns() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED murmur_nodes_find_each_other_by_mdns: {why}");
        return;
    }
    let mut lab = match Lab::build("mmdns", NODES, "10.214.0") {
        Ok(lab) => lab,
        Err(e) => {
            println!("SKIPPED murmur_nodes_find_each_other_by_mdns: cannot create namespaces: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("library.key");
    let key: [u8; 32] = rand::random();
    write_private(
        &secret,
        &key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    );
    let token_file = dir.path().join("api.token");
    write_private(&token_file, TOKEN);
    for i in 1..=NODES {
        let data = dir.path().join(format!("n{i}"));
        let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
        let child = lab
            .command(i, BIN)
            .arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--api",
                "127.0.0.1:7700",
                "--listen",
                "/ip4/0.0.0.0/tcp/7000",
            ])
            .arg("--library-secret-file")
            .arg(&secret)
            .arg("--api-token-file")
            .arg(&token_file)
            .env("MURMUR_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn murmur in its namespace");
        lab.children.push(child);
    }
    let started = Instant::now();
    wait("every node connected to the two others by mDNS", || {
        (1..=NODES).all(|i| {
            http(&lab, i, "GET", "/v1/status", None).is_some_and(|st| {
                st["peers"].as_array().is_some_and(|p| {
                    p.iter().filter(|p| p["connected"] == J::Bool(true)).count() == NODES - 1
                })
            })
        })
    });
    println!(
        "mDNS: {NODES} nodes fully connected after {} ms",
        started.elapsed().as_millis()
    );
    let mut found_by_mdns = 0;
    for i in 1..=NODES {
        let st = http(&lab, i, "GET", "/v1/status", None).expect("status");
        for p in st["peers"].as_array().into_iter().flatten() {
            println!(
                "node {i}: peer {} found by {}",
                p["client_uuid"], p["discovery"]
            );
            if p["discovery"] == "mdns" {
                found_by_mdns += 1;
            }
        }
    }
    // One side of each pair dials (the other sees an inbound connection).
    assert!(
        found_by_mdns >= NODES,
        "connections must come from mDNS discovery"
    );
    let created = http(
        &lab,
        1,
        "POST",
        "/v1/shared/tags",
        Some(r#"{"name": "over mdns"}"#),
    )
    .expect("created");
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();
    wait("the write reaches every node", || {
        (2..=NODES).all(|i| {
            http(&lab, i, "GET", &format!("/v1/shared/tags/{uuid}"), None)
                .is_some_and(|r| r["name"] == "over mdns")
        })
    });
}
