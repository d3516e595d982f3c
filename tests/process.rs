//! Process tests of the built `murmur` binary: three `murmur run` processes on 127.0.0.1
//! with `--no-mdns` and `--peer`, driven over HTTP; one is killed with SIGKILL right after
//! an acknowledged write and restarted on its data dir.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Proc {
    child: Option<Child>,
    data: PathBuf,
    api: u16,
    p2p: u16,
    peers: Vec<u16>,
    secret: PathBuf,
    log: PathBuf,
}

impl Proc {
    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--api", &format!("127.0.0.1:{}", self.api)])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", self.p2p)])
            .arg("--no-mdns")
            .arg("--library-secret-file")
            .arg(&self.secret);
        for p in &self.peers {
            cmd.args(["--peer", &format!("/ip4/127.0.0.1/tcp/{p}")]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        cmd.env("MURMUR_LOG", "info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        self.child = Some(cmd.spawn().expect("spawn murmur"));
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("library.key");
        let key: [u8; 32] = rand::random();
        std::fs::write(
            &secret,
            key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        )
        .expect("secret");
        let mut procs: Vec<Proc> = Vec::new();
        for i in 0..n {
            let peers = procs.iter().map(|p| p.p2p).collect();
            let mut p = Proc {
                child: None,
                data: dir.path().join(format!("n{i}")),
                api: free_port(),
                p2p: free_port(),
                peers,
                secret: secret.clone(),
                log: dir.path().join(format!("n{i}.log")),
            };
            p.spawn();
            procs.push(p);
        }
        let c = Cluster {
            procs,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        for i in 0..n {
            c.wait_healthy(i).await;
        }
        c
    }

    async fn wait_healthy(&self, i: usize) {
        let url = self.procs[i].url("/v1/health");
        poll(
            &format!("node {i} healthy ({})", self.procs[i].log.display()),
            || async {
                matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
            },
        )
        .await;
    }

    async fn get(&self, i: usize, path: &str) -> (u16, J) {
        match self.http.get(self.procs[i].url(path)).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(J::Null))
            }
            Err(_) => (0, J::Null),
        }
    }

    async fn post(&self, i: usize, path: &str, body: J) -> (u16, J) {
        let r = self
            .http
            .post(self.procs[i].url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(J::Null))
    }

    async fn connected(&self, i: usize) -> usize {
        let (_, st) = self.get(i, "/v1/status").await;
        st["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["connected"] == J::Bool(true)).count())
            .unwrap_or(0)
    }

    async fn digests_equal(&self) -> bool {
        let mut ds = Vec::new();
        for i in 0..self.procs.len() {
            ds.push(self.get(i, "/v1/digest").await.1["digest"].clone());
        }
        ds[0] != J::Null && ds.windows(2).all(|w| w[0] == w[1])
    }
}

async fn poll<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Reads `/v1/events` of a node and sends each changed row's uuid with its arrival time.
fn follow_events(url: String, tx: tokio::sync::mpsc::UnboundedSender<(String, Instant)>) {
    tokio::spawn(async move {
        let Ok(mut resp) = reqwest::get(url).await else {
            return;
        };
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                if let Some(data) = line.strip_prefix("data: ")
                    && let Ok(ev) = serde_json::from_str::<J>(data.trim())
                    && let Some(u) = ev["uuid"].as_str()
                    && tx.send((u.to_owned(), now)).is_err()
                {
                    return;
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_converge_and_survive_sigkill() {
    let mut c = Cluster::start(3).await;
    for i in 0..3 {
        poll("full mesh", || async { c.connected(i).await >= 2 }).await;
    }

    // Writes on every node converge.
    let mut uuids = Vec::new();
    for i in 0..3 {
        let (s, b) = c
            .post(i, "/v1/shared/tags", json!({"name": format!("from {i}")}))
            .await;
        assert_eq!(s, 201, "{b}");
        uuids.push(b["uuid"].as_str().expect("uuid").to_owned());
    }
    poll("writes converge", || c.digests_equal()).await;
    for i in 0..3 {
        for u in &uuids {
            assert_eq!(c.get(i, &format!("/v1/shared/tags/{u}")).await.0, 200);
        }
    }

    // Write-to-visible latency across the 3 processes, from /v1/events of nodes 1 and 2.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    follow_events(c.procs[1].url("/v1/events"), tx.clone());
    follow_events(c.procs[2].url("/v1/events"), tx);
    // Let both streams attach before measuring (the first event proves it).
    let (_, warm) = c
        .post(0, "/v1/shared/tags", json!({"name": "warm-up"}))
        .await;
    let warm = warm["uuid"].as_str().unwrap_or_default().to_owned();
    let mut seen_warm = 0;
    while seen_warm < 2 {
        let (u, _) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("events")
            .expect("stream");
        if u == warm {
            seen_warm += 1;
        }
    }
    let mut latencies = Vec::new();
    for k in 0..100 {
        let sent = Instant::now();
        let (s, b) = c
            .post(0, "/v1/shared/tags", json!({"name": format!("lat {k}")}))
            .await;
        assert_eq!(s, 201);
        let u = b["uuid"].as_str().expect("uuid").to_owned();
        let mut got = 0;
        let mut last = sent;
        while got < 2 {
            let (eu, at) = tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("event in time")
                .expect("stream");
            if eu == u {
                got += 1;
                last = at;
            }
        }
        latencies.push(last.duration_since(sent).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "write-to-visible on all 3 processes (HTTP write included), n={}: p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // SIGKILL right after an acknowledged write; the write survives and reaches the others.
    let (s, b) = c
        .post(1, "/v1/shared/tags", json!({"name": "acked then killed"}))
        .await;
    assert_eq!(s, 201, "{b}");
    c.procs[1].kill9();
    let u = b["uuid"].as_str().expect("uuid").to_owned();
    let path = format!("/v1/shared/tags/{u}");
    // Writes while node 1 is down reach it when it is back.
    let (s, _) = c
        .post(2, "/v1/shared/tags", json!({"name": "while 1 was down"}))
        .await;
    assert_eq!(s, 201);
    c.procs[1].spawn();
    c.wait_healthy(1).await;
    assert_eq!(
        c.get(1, &path).await.0,
        200,
        "the acknowledged write survived SIGKILL"
    );
    poll("the killed node's write reaches the others", || async {
        c.get(0, &path).await.0 == 200 && c.get(2, &path).await.0 == 200
    })
    .await;
    poll("all converge after the restart", || c.digests_equal()).await;
}
