//! The local API lets only the user's own programs in (issue 15): a bearer token on every
//! call but health, loopback `Host` names only, JSON bodies only, no CORS unless asked for,
//! bounded requests, lists that say when there is more, and owner-only files. Each test
//! checks that a refused request changed nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use murmur_testkit::*;
use reqwest::Method as M;
use serde_json::{Value as J, json};

/// A request without the test client's default token; `auth` is the whole
/// `Authorization` value, when one is sent.
async fn bare(
    n: &TestNode,
    method: M,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, J) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", n.api));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    // /v1/events streams: its body is not read when it was let in.
    if headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        return (status, headers, J::Null);
    }
    (status, headers, r.json().await.unwrap_or(J::Null))
}

fn error_of(body: &J) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {body}"))
}

/// What a node holds: its digest and version vector. Equal before and after a refused
/// request means the request wrote nothing.
async fn state(n: &TestNode) -> (String, String) {
    (
        n.digest().await,
        format!("{:?}", n.node().store().version_vector()),
    )
}

/// Every route, with a body where it takes one.
fn routes(tag: &str) -> Vec<(M, String, Option<J>)> {
    let owner = uuid::Uuid::now_v7();
    vec![
        (M::GET, "/v1/status".into(), None),
        (M::GET, "/v1/shared/tags".into(), None),
        (M::GET, format!("/v1/shared/tags/{tag}"), None),
        (
            M::POST,
            "/v1/shared/tags".into(),
            Some(json!({"name": "intruder"})),
        ),
        (
            M::PATCH,
            format!("/v1/shared/tags/{tag}"),
            Some(json!({"name": "intruder"})),
        ),
        (M::DELETE, format!("/v1/shared/tags/{tag}"), None),
        (M::GET, format!("/v1/owned/file_paths?owner={owner}"), None),
        (M::GET, format!("/v1/owned/file_paths/{owner}"), None),
        (
            M::POST,
            "/v1/owned/file_paths".into(),
            Some(json!([{"name": "intruder"}])),
        ),
        (M::DELETE, format!("/v1/owned/file_paths/{owner}"), None),
        (
            M::POST,
            "/v1/batch".into(),
            Some(json!([{"op": "create", "resource": "tags", "fields": {"name": "intruder"}}])),
        ),
        (M::GET, "/v1/files".into(), None),
        (M::GET, "/v1/digest".into(), None),
        (M::GET, "/v1/events".into(), None),
        (M::GET, "/metrics".into(), None),
        (M::GET, "/v1/no-such-route".into(), None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_gets_401_on_every_route_but_health() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let tag = n.create_tag("keep").await;
    let before = state(&n).await;
    let token = n.node().api_token().to_owned();
    let wrong = format!("Bearer {}", random_hex());
    let almost = format!("Bearer {}", &token[..token.len() - 1]);
    let basic = format!("Basic {token}");
    for (method, path, body) in routes(&tag) {
        let body = body.map(|b| b.to_string().into_bytes());
        for auth in [None, Some(wrong.as_str()), Some(&almost), Some(&basic)] {
            let mut h = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            let (status, headers, resp) = bare(&n, method.clone(), &path, &h, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {resp}");
            assert!(error_of(&resp).contains("token"), "{resp}");
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    // Health needs none: container healthchecks and `murmur health` use it.
    let (status, _, resp) = bare(&n, M::GET, "/v1/health", &[], None).await;
    assert_eq!((status, &resp["status"]), (200, &json!("ok")));
    assert_eq!(state(&n).await, before, "refused calls wrote nothing");

    // With the token, every route answers (the defence lets the right caller in).
    let good = format!("Bearer {token}");
    for (method, path, body) in routes(&tag) {
        let deleting = method == M::DELETE && path.contains("/shared/");
        if deleting {
            continue;
        }
        let h = [
            ("content-type", "application/json"),
            ("authorization", good.as_str()),
        ];
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, _, resp) = bare(&n, method.clone(), &path, &h, body).await;
        assert_ne!(status, 401, "{method} {path}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_get_415_and_write_nothing() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let tag = n.create_tag("keep").await;
    let before = state(&n).await;
    let auth = format!("Bearer {}", n.node().api_token());
    let tag_json = br#"{"name": "from a web page"}"#.to_vec();
    let batch_json =
        br#"[{"op": "create", "resource": "tags", "fields": {"name": "from a form"}}]"#.to_vec();
    let cases: Vec<(M, String, Option<&str>, Vec<u8>)> = vec![
        // What any web page may send anywhere without a preflight.
        (
            M::POST,
            "/v1/shared/tags".into(),
            Some("text/plain"),
            tag_json.clone(),
        ),
        (
            M::POST,
            "/v1/batch".into(),
            Some("application/x-www-form-urlencoded"),
            batch_json.clone(),
        ),
        (
            M::POST,
            "/v1/owned/file_paths".into(),
            Some("multipart/form-data; boundary=x"),
            br#"[{"name": "x"}]"#.to_vec(),
        ),
        (
            M::PATCH,
            format!("/v1/shared/tags/{tag}"),
            Some("text/plain;charset=utf-8"),
            tag_json.clone(),
        ),
        (M::POST, "/v1/shared/tags".into(), None, tag_json.clone()),
        (
            M::POST,
            "/v1/shared/tags".into(),
            Some("application/json; charset=latin1"),
            tag_json.clone(),
        ),
        // A body on a method that takes none is checked too.
        (
            M::DELETE,
            format!("/v1/shared/tags/{tag}"),
            Some("text/plain"),
            b"x".to_vec(),
        ),
    ];
    for (method, path, ct, body) in cases {
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let (status, _, resp) = bare(&n, method.clone(), &path, &h, Some(body)).await;
        assert_eq!(status, 415, "{method} {path} as {ct:?}: {resp}");
        assert!(error_of(&resp).contains("application/json"), "{resp}");
    }
    assert_eq!(state(&n).await, before, "refused bodies wrote nothing");
    assert_eq!(
        n.get(&format!("/v1/shared/tags/{tag}")).await.1["name"],
        "keep"
    );
    // JSON, with a charset parameter, is taken.
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json; charset=utf-8"),
    ];
    let (status, _, resp) = bare(&n, M::POST, "/v1/shared/tags", &h, Some(tag_json)).await;
    assert_eq!(status, 201, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_for_reads_and_writes() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new_with(&secret, |c| {
        c.api_options.allow_hosts = vec!["murmur.lan".into()];
    })
    .await;
    let tag = n.create_tag("keep").await;
    let before = state(&n).await;
    let auth = format!("Bearer {}", n.node().api_token());
    let port = n.node().api_addr().port();
    for host in [
        format!("attacker.example:{port}"),
        "attacker.example".into(),
        format!("localhost.attacker.example:{port}"),
        format!("0.0.0.0:{port}"),
        format!("192.168.1.20:{port}"),
    ] {
        // With the right token even: a rebound page never reads an answer.
        for (method, path, body) in
            routes(&tag)
                .into_iter()
                .chain([(M::GET, "/v1/health".into(), None)])
        {
            let h = [
                ("host", host.as_str()),
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            let body = body.map(|b| b.to_string().into_bytes());
            let (status, _, resp) = bare(&n, method.clone(), &path, &h, body).await;
            assert_eq!(status, 403, "{method} {path} for {host}: {resp}");
            assert!(error_of(&resp).contains("--api-allow-host"), "{resp}");
        }
    }
    assert_eq!(state(&n).await, before, "refused requests wrote nothing");
    // Loopback names and addresses, any port, and the configured name are answered.
    for host in [
        format!("localhost:{port}"),
        "localhost".into(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("murmur.lan:{port}"),
        "MURMUR.LAN".into(),
    ] {
        let h = [("host", host.as_str()), ("authorization", auth.as_str())];
        let (status, _, resp) = bare(&n, M::GET, "/v1/shared/tags", &h, None).await;
        assert_eq!(status, 200, "{host}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_headers_unless_an_origin_is_allowed() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let preflight = |n: &TestNode, origin: &'static str| {
        let url = format!("{}/v1/shared/tags", n.api);
        async move {
            let r = reqwest::Client::new()
                .request(M::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await
                .expect("preflight");
            (r.status().as_u16(), r.headers().clone())
        }
    };
    let plain = TestNode::new(&secret).await;
    let (status, h) = preflight(&plain, "http://localhost:3000").await;
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    assert_eq!(status, 401, "a preflight is just an unauthenticated call");
    let r = plain
        .http
        .get(format!("{}/v1/shared/tags", plain.api))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("get");
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    let open = TestNode::new_with(&secret, |c| {
        c.api_options.allow_origins = vec!["http://localhost:3000".into()];
    })
    .await;
    let (status, h) = preflight(&open, "http://localhost:3000").await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let (_, h) = preflight(&open, "http://evil.example").await;
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    // The token is still needed after a preflight.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/shared/tags", open.api))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

/// `[{},{},…]` of about `bytes` bytes.
fn empty_rows(bytes: usize) -> Vec<u8> {
    let mut b = b"[{}".to_vec();
    while b.len() + 4 < bytes {
        b.extend_from_slice(b",{}");
    }
    b.push(b']');
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mib_of_empty_rows_writes_nothing() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    n.create_tag("keep").await;
    let before = state(&n).await;
    let post = |path: &'static str, body: Vec<u8>| {
        let req = n
            .http
            .post(format!("{}{path}", n.api))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.expect("request");
            (r.status().as_u16(), r.json::<J>().await.unwrap_or(J::Null))
        }
    };
    let mib = empty_rows(1 << 20);
    // About 350,000 rows: over the cap, refused while parsing.
    let (status, resp) = post("/v1/owned/file_paths", mib.clone()).await;
    assert_eq!(status, 413, "{resp}");
    assert!(error_of(&resp).contains("--api-max-rows"), "{resp}");
    let (status, resp) = post("/v1/batch", mib).await;
    assert_eq!(status, 413, "{resp}");
    // Under the cap, rows that carry no field are refused.
    let (status, resp) = post("/v1/owned/file_paths", empty_rows(3000)).await;
    assert_eq!(status, 400, "{resp}");
    assert!(error_of(&resp).contains("at least one field"), "{resp}");
    let (status, resp) = post(
        "/v1/owned/file_paths",
        br#"[{"name": "ok"}, {"uuid": "00000000-0000-7000-8000-000000000009"}]"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(error_of(&resp).contains("entry 1"), "{resp}");
    let (status, resp) = post("/v1/shared/tags", b"{}".to_vec()).await;
    assert_eq!(status, 400, "{resp}");
    assert!(error_of(&resp).contains("at least one field"), "{resp}");
    let (status, resp) = post(
        "/v1/batch",
        br#"[{"op": "create", "resource": "tags", "fields": {"name": "a"}}, {"op": "create", "resource": "tags"}]"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(error_of(&resp).contains("entry 1"), "{resp}");
    assert_eq!(state(&n).await, before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bounds_are_configurable() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new_with(&secret, |c| {
        c.api_options.max_rows = 10;
        c.api_options.body_limit = 4096;
    })
    .await;
    let rows = |k: usize| {
        J::Array(
            (0..k)
                .map(|i| json!({"name": format!("f{i}"), "materialized_path": "/"}))
                .collect(),
        )
    };
    let before = state(&n).await;
    let (status, resp) = n.post("/v1/owned/file_paths", rows(11)).await;
    assert_eq!(status, 413, "{resp}");
    assert!(error_of(&resp).contains("more than 10 rows"), "{resp}");
    let batch = |k: usize| {
        J::Array(
            (0..k)
                .map(|i| json!({"op": "create", "resource": "tags", "fields": {"name": format!("t{i}")}}))
                .collect(),
        )
    };
    let (status, resp) = n.post("/v1/batch", batch(11)).await;
    assert_eq!(status, 413, "{resp}");
    let big = json!({"name": "x".repeat(5000)});
    let (status, resp) = n.post("/v1/shared/tags", big).await;
    assert_eq!(status, 413, "{resp}");
    assert!(error_of(&resp).contains("--api-body-limit"), "{resp}");
    assert_eq!(state(&n).await, before, "nothing was written");
    // At the caps, taken.
    let (status, resp) = n.post("/v1/owned/file_paths", rows(10)).await;
    assert_eq!(status, 201, "{resp}");
    let (status, resp) = n.post("/v1/batch", batch(10)).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_limit_wait_their_turn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new_with(&secret, |c| c.api_options.max_writes = 1).await;
    // A write whose body is still on its way holds the one write slot.
    let body = br#"{"name": "first"}"#;
    let mut slow = tokio::net::TcpStream::connect(n.node().api_addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/shared/tags HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        n.node().api_token(),
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    slow.write_all(&body[..5]).await.expect("write");
    // Other writes now wait (a probe that would get 404 gets no answer in time).
    let probe = || {
        n.http
            .post(format!("{}/v1/shared/no-such-resource", n.api))
            .json(&json!({"name": "probe"}))
            .timeout(Duration::from_millis(300))
            .send()
    };
    eventually(
        Duration::from_secs(10),
        "a write that waits while another holds the slot",
        || async { probe().await.is_err_and(|e| e.is_timeout()) },
    )
    .await;
    // Reads are not writes: they go past.
    assert_eq!(n.get("/v1/digest").await.0, 200);
    let waiting = tokio::spawn({
        let http = n.http.clone();
        let url = format!("{}/v1/shared/tags", n.api);
        async move {
            http.post(url)
                .json(&json!({"name": "second"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // The rest of the body: the first write completes, then the waiting one.
    slow.write_all(&body[5..]).await.expect("write");
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(waiting.await.expect("task").expect("second write"), 201);
}

/// Pages through a list with its cursor; returns every row's `key`.
async fn every_row(n: &TestNode, base: &str, limit: usize, key: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let sep = if base.contains('?') { '&' } else { '?' };
        let path = match &after {
            Some(a) => format!("{base}{sep}limit={limit}&after={a}"),
            None => format!("{base}{sep}limit={limit}"),
        };
        let (status, page) = n.get(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        pages += 1;
        let rows = page["rows"].as_array().expect("rows");
        assert!(rows.len() <= limit, "{page}");
        seen.extend(
            rows.iter()
                .map(|r| r[key].as_str().expect("key").to_owned()),
        );
        match page["next"].as_str() {
            Some(c) => {
                assert_eq!(rows.len(), limit, "only a full page has a next");
                after = Some(c.to_owned());
            }
            None => return (seen, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_past_its_limit_returns_a_cursor_that_reaches_every_row() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let items: Vec<J> = (0..25)
        .map(|i| json!({"op": "create", "resource": "tags", "fields": {"name": format!("t{i}")}}))
        .collect();
    let (status, made) = n.post("/v1/batch", J::Array(items)).await;
    assert_eq!(status, 200, "{made}");
    let mut want: Vec<String> = made["uuids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    want.sort();
    let (got, pages) = every_row(&n, "/v1/shared/tags", 10, "uuid").await;
    assert_eq!((got, pages), (want.clone(), 3));
    // Exactly a page's worth: no cursor to an empty page.
    let (got, pages) = every_row(&n, "/v1/shared/tags", 25, "uuid").await;
    assert_eq!((got, pages), (want, 1));
    // The first page by default says there is more.
    let (_, first) = n.get("/v1/shared/tags?limit=3").await;
    assert!(first["next"].is_string(), "{first}");

    let rows: Vec<J> = (0..23)
        .map(|i| json!({"materialized_path": "/", "name": format!("f{i}"), "cas_id": format!("cas{i:02}")}))
        .collect();
    let (status, resp) = n.post("/v1/owned/file_paths", J::Array(rows)).await;
    assert_eq!(status, 201, "{resp}");
    let owner = n.node().client_uuid();
    let (got, pages) = every_row(
        &n,
        &format!("/v1/owned/file_paths?owner={owner}"),
        5,
        "uuid",
    )
    .await;
    assert_eq!((got.len(), pages), (23, 5));
    let mut distinct = got.clone();
    distinct.dedup();
    assert_eq!(distinct, got);
    let (got, pages) = every_row(&n, "/v1/files", 7, "cas_id").await;
    assert_eq!(pages, 4);
    assert_eq!(
        got,
        (0..23).map(|i| format!("cas{i:02}")).collect::<Vec<_>>()
    );
    // A limit over the most a page holds is cut to it, and still says there is more.
    let (_, page) = n.get("/v1/shared/tags?limit=1000000").await;
    assert_eq!(page["rows"].as_array().unwrap().len(), 25);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_its_files_are_private_after_a_first_run() {
    init_tracing();
    let (_sd, secret) = secret_file();
    // A new library (its secret written to the data dir) and a joining node.
    let made = TestNode::new_with(&secret, |c| c.library_secret_file = None).await;
    let joined = TestNode::new(&secret).await;
    for n in [&made, &joined] {
        n.create_tag("a row, so the WAL has been written").await;
        let data = n.dir.path().join("data");
        assert_eq!(mode(&data), 0o700, "{}", data.display());
        for f in [
            "library.db",
            "library.db-wal",
            "library.db-shm",
            "identity.key",
            "library.key",
            "api.token",
        ] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        let token = std::fs::read_to_string(data.join("api.token")).unwrap();
        assert_eq!(token.trim(), n.node().api_token());
        assert!(token.trim().len() >= 32, "at least 128 bits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_others_may_read_is_refused_at_start() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    let start_err = |c: murmur::node::Config| async move {
        match murmur::node::Node::start(c).await {
            Ok(n) => {
                n.shutdown().await;
                panic!("the node started")
            }
            Err(e) => format!("{e:#}"),
        }
    };
    // The library secret to join.
    chmod(&secret, 0o644);
    let dir = tempfile::tempdir().unwrap();
    let err = start_err(config(&dir, &secret)).await;
    assert!(
        err.contains("too open") && err.contains(&format!("chmod 600 {}", secret.display())),
        "{err}"
    );
    chmod(&secret, 0o600);
    // The files of a data dir: the token, the device key, the library's secret.
    let mut n = TestNode::new(&secret).await;
    n.stop().await;
    let data = n.dir.path().join("data");
    for f in ["api.token", "identity.key", "library.key"] {
        let p = data.join(f);
        chmod(&p, 0o640);
        let err = start_err(config(&n.dir, &secret)).await;
        assert!(
            err.contains(&format!("chmod 600 {}", p.display())),
            "{f}: {err}"
        );
        chmod(&p, 0o600);
    }
    // The database of an earlier version, 0644 in a 0755 dir: narrowed, not refused.
    chmod(&data, 0o755);
    chmod(&data.join("library.db"), 0o644);
    n.restart_with(|_| {}).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("library.db")), 0o600);
    // A token file named by the user is used, and refused the same way when too open.
    let own = n.dir.path().join("own.token");
    write_private(&own, "a-token-of-my-own-that-is-long-enough");
    n.restart_with(|c| c.api_options.token_file = Some(own.clone()))
        .await;
    assert_eq!(
        n.node().api_token(),
        "a-token-of-my-own-that-is-long-enough"
    );
    assert_eq!(n.get("/v1/status").await.0, 200);
    n.stop().await;
    chmod(&own, 0o604);
    let mut c = config(&n.dir, &secret);
    c.api_options.token_file = Some(own.clone());
    let err = start_err(c).await;
    assert!(
        err.contains(&format!("chmod 600 {}", own.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_token_by_itself() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let api = n.node().api_addr().to_string();
    let data = n.dir.path().join("data");
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_murmur"))
                .args(&args)
                .env_remove("MURMUR_DATA_DIR")
                .env_remove("MURMUR_API_TOKEN_FILE")
                .env("RUST_BACKTRACE", "0")
                .output()
                .expect("run murmur");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // From the node's data dir.
    let data_s = data.display().to_string();
    let (ok, out) = cli(s(&["digest", "--api", &api, "--data-dir", &data_s]))
        .await
        .unwrap();
    assert!(ok && out.contains("rows"), "{out}");
    // From a copy of the token file.
    let copy = n.dir.path().join("copy.token");
    write_private(&copy, n.node().api_token());
    let copy_s = copy.display().to_string();
    let (ok, out) = cli(s(&["status", "--api", &api, "--api-token-file", &copy_s]))
        .await
        .unwrap();
    assert!(ok && out.contains(&n.node().peer_id().to_string()), "{out}");
    // Without one: says where it looked and what to pass; health needs none.
    let empty = tempfile::tempdir().unwrap();
    let empty_s = empty.path().display().to_string();
    let (ok, out) = cli(s(&["peers", "--api", &api, "--data-dir", &empty_s]))
        .await
        .unwrap();
    assert!(!ok && out.contains("--api-token-file"), "{out}");
    let (ok, out) = cli(s(&["health", "--api", &api, "--data-dir", &empty_s]))
        .await
        .unwrap();
    assert!(ok, "{out}");
    // A wrong token: the node's 401 message.
    write_private(&copy, &random_hex());
    let (ok, out) = cli(s(&["status", "--api", &api, "--api-token-file", &copy_s]))
        .await
        .unwrap();
    assert!(!ok && out.contains("401"), "{out}");
}
