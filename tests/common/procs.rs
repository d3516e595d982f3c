//! Helpers for process tests: `murmur run` processes on 127.0.0.1 (mDNS off, explicit
//! peers), driven over HTTP, killed with SIGKILL and restarted on their data dirs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

use super::{client_with_token, random_hex, write_private};

pub const BIN: &str = env!("CARGO_BIN_EXE_murmur");
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Proc {
    pub child: Option<Child>,
    pub data: PathBuf,
    pub api: u16,
    pub p2p: u16,
    pub peers: Vec<u16>,
    pub secret: PathBuf,
    pub log: PathBuf,
    /// Extra `murmur run` arguments.
    pub args: Vec<String>,
    /// The API token file (the cluster's nodes share one token).
    pub token_file: PathBuf,
}

impl Proc {
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--api", &format!("127.0.0.1:{}", self.api)])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", self.p2p)])
            .arg("--no-mdns")
            .arg("--library-secret-file")
            .arg(&self.secret)
            .arg("--api-token-file")
            .arg(&self.token_file);
        for p in &self.peers {
            cmd.args(["--peer", &format!("/ip4/127.0.0.1/tcp/{p}")]);
        }
        cmd.args(&self.args);
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

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    /// An HTTP client with this node's API token and no timeout (for `/v1/events`).
    pub fn streaming_client(&self) -> reqwest::Client {
        let token = std::fs::read_to_string(&self.token_file).expect("token file");
        client_with_token(token.trim()).build().expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub procs: Vec<Proc>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, |_| Vec::new()).await
    }

    /// Starts `n` nodes; node i gets the extra arguments `args(i)`; each dials the ones before it.
    pub async fn start_with(n: usize, args: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("library.key");
        write_private(&secret, &random_hex());
        let token = random_hex();
        let token_file = dir.path().join("api.token");
        write_private(&token_file, &token);
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
                args: args(i),
                token_file: token_file.clone(),
            };
            p.spawn();
            procs.push(p);
        }
        let c = Cluster {
            procs,
            dir,
            http: client_with_token(&token)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        for i in 0..n {
            c.wait_healthy(i).await;
        }
        c
    }

    pub async fn wait_healthy(&self, i: usize) {
        let url = self.procs[i].url("/v1/health");
        poll(
            &format!("node {i} healthy ({})", self.procs[i].log.display()),
            || async {
                matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
            },
        )
        .await;
    }

    pub async fn get(&self, i: usize, path: &str) -> (u16, J) {
        match self.http.get(self.procs[i].url(path)).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(J::Null))
            }
            Err(_) => (0, J::Null),
        }
    }

    pub async fn post(&self, i: usize, path: &str, body: J) -> (u16, J) {
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

    pub async fn connected(&self, i: usize) -> usize {
        let (_, st) = self.get(i, "/v1/status").await;
        st["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["connected"] == J::Bool(true)).count())
            .unwrap_or(0)
    }

    pub async fn digests_equal(&self) -> bool {
        let mut ds = Vec::new();
        for i in 0..self.procs.len() {
            ds.push(self.get(i, "/v1/digest").await.1["digest"].clone());
        }
        ds[0] != J::Null && ds.windows(2).all(|w| w[0] == w[1])
    }
}

pub async fn poll<F, Fut>(what: &str, mut check: F)
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

impl Drop for Cluster {
    /// On a failing test, show the end of each node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, p) in self.procs.iter().enumerate() {
                let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("---- node {i} log (last lines) ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
