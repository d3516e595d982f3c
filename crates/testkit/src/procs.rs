//! `murmur run` processes on 127.0.0.1 (mDNS off, explicit peers), driven over HTTP, killed
//! with SIGKILL and restarted on their data dirs. The binary's path is the caller's: an
//! integration test passes `env!("CARGO_BIN_EXE_murmur")`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value as J;

use crate::http;
use crate::node::{client_with_token, random_hex, write_private, write_secret};
use crate::wait::eventually;

/// How long [`poll`] waits.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A TCP port free on 127.0.0.1 when asked, and never handed out before in this process:
/// the OS may give a port just released to the next `bind(0)`, and libp2p listens with
/// `SO_REUSEPORT`, so two nodes given the same port both listen on it and one dials itself
/// (seen once in `tests/restore.rs`: "n1 and n2 connected" timed out).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// One `murmur run` process and what it needs to start again.
pub struct Proc {
    /// The `murmur` binary.
    pub bin: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Its data dir.
    pub data: PathBuf,
    /// Its API port.
    pub api: u16,
    /// Its libp2p port.
    pub p2p: u16,
    /// libp2p ports of the nodes it dials.
    pub peers: Vec<u16>,
    /// The library secret file.
    pub secret: PathBuf,
    /// Where its stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    /// Extra `murmur run` arguments.
    pub args: Vec<String>,
    /// The API token file (the cluster's nodes share one token).
    pub token_file: PathBuf,
}

impl Proc {
    /// Starts the process.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
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

    /// Kills the process with SIGKILL and reaps it.
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

    /// The URL of `path` on its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Processes of one library in one temp dir (data dirs, logs, the secret).
pub struct Cluster {
    /// The processes.
    pub procs: Vec<Proc>,
    /// The temp dir that holds everything.
    pub dir: tempfile::TempDir,
    /// The HTTP client of the calls (10 s timeout).
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts `n` processes of `bin`; each dials the ones before it.
    pub async fn start(bin: &str, n: usize) -> Cluster {
        Self::start_with(bin, n, |_| Vec::new()).await
    }

    /// Starts `n` nodes; node i gets the extra arguments `args(i)`; each dials the ones before it.
    pub async fn start_with(bin: &str, n: usize, args: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("library.key");
        write_secret(&secret);
        let token = random_hex();
        let token_file = dir.path().join("api.token");
        write_private(&token_file, &token);
        let mut procs: Vec<Proc> = Vec::new();
        for i in 0..n {
            let peers = procs.iter().map(|p| p.p2p).collect();
            let mut p = Proc {
                bin: PathBuf::from(bin),
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

    /// A request to node `i`'s API at `path`, for calls the methods below do not make.
    pub fn request(&self, method: Method, i: usize, path: &str) -> reqwest::RequestBuilder {
        http::request(&self.http, method, &self.procs[i].url(path))
    }

    /// Waits until node `i` answers `/v1/health`.
    pub async fn wait_healthy(&self, i: usize) {
        poll(
            &format!("node {i} healthy ({})", self.procs[i].log.display()),
            || async {
                matches!(self.request(Method::GET, i, "/v1/health").send().await,
                    Ok(r) if r.status().is_success())
            },
        )
        .await;
    }

    /// `GET path` on node `i`: the status and JSON body, `(0, null)` when it does not answer.
    pub async fn get(&self, i: usize, path: &str) -> (u16, J) {
        http::send(self.request(Method::GET, i, path), None)
            .await
            .unwrap_or((0, J::Null))
    }

    /// `POST path` with a JSON body on node `i`.
    pub async fn post(&self, i: usize, path: &str, body: J) -> (u16, J) {
        http::send(self.request(Method::POST, i, path), Some(&body))
            .await
            .expect("request")
    }

    /// How many peers node `i` is connected to.
    pub async fn connected(&self, i: usize) -> usize {
        let (_, st) = self.get(i, "/v1/status").await;
        st["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["connected"] == J::Bool(true)).count())
            .unwrap_or(0)
    }

    /// Whether every node answers the same digest.
    pub async fn digests_equal(&self) -> bool {
        let mut ds = Vec::new();
        for i in 0..self.procs.len() {
            ds.push(self.get(i, "/v1/digest").await.1["digest"].clone());
        }
        ds[0] != J::Null && ds.windows(2).all(|w| w[0] == w[1])
    }
}

/// Polls `check` until it returns true; panics with `what` after [`DEADLINE`].
pub async fn poll<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(DEADLINE, what, check).await
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
