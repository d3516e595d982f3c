//! The HTTP API against bad input: malformed JSON, huge bodies, wrong types, unknown
//! routes and resources. Each gets a clear 4xx with `{"error": ...}` and changes nothing.

use murmur_testkit::*;
use serde_json::Value as J;

async fn raw(n: &TestNode, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, J) {
    let r = n
        .request(method, path)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(J::Null))
}

fn error_of(body: &J) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let tag = n.create_tag("keep").await;
    let before = n.get("/v1/digest").await.1;
    // The version vector, not the op log's length: the test node prunes its log every
    // 500 ms, and a lone node may prune its own op while the cases run.
    let versions = n.node().store().version_vector();
    use reqwest::Method as M;

    let cases: Vec<(M, String, Vec<u8>, u16, &str)> = vec![
        (M::POST, "/v1/shared/tags".into(), b"{\"name\": ".to_vec(), 400, "malformed JSON"),
        (M::POST, "/v1/shared/tags".into(), b"[1,2]".to_vec(), 400, "JSON object"),
        (M::POST, "/v1/shared/tags".into(), br#"{"name": 5}"#.to_vec(), 400, "must be text"),
        (M::POST, "/v1/shared/tags".into(), br#"{"nme": "x"}"#.to_vec(), 400, "unknown field"),
        (M::POST, "/v1/shared/tags".into(), br#"{"uuid": 7}"#.to_vec(), 400, "uuid"),
        (M::POST, "/v1/shared/nope".into(), br#"{"name": "x"}"#.to_vec(), 404, "unknown resource"),
        (M::POST, "/v1/shared/file_paths".into(), br#"{"name": "x"}"#.to_vec(), 400, "owned"),
        (M::POST, "/v1/shared/albums".into(), br#"{"is_hidden": "yes"}"#.to_vec(), 400, "bool"),
        (M::POST, "/v1/shared/tags".into(), format!(r#"{{"uuid": "{tag}", "name": "dup"}}"#).into_bytes(), 409, "already exists"),
        (M::PATCH, format!("/v1/shared/tags/{tag}"), br#"{}"#.to_vec(), 400, "at least one field"),
        (M::PATCH, "/v1/shared/tags/not-a-uuid".into(), br#"{"name": "x"}"#.to_vec(), 400, "not a UUID"),
        (M::PATCH, format!("/v1/shared/tags/{}", uuid::Uuid::now_v7()), br#"{"name": "x"}"#.to_vec(), 404, "no live row"),
        (M::DELETE, format!("/v1/shared/tags/{}", uuid::Uuid::now_v7()), vec![], 404, "no live row"),
        (M::POST, "/v1/owned/file_paths".into(), br#"{"name": "x"}"#.to_vec(), 400, "array"),
        (M::POST, "/v1/owned/file_paths".into(), br#"[]"#.to_vec(), 400, "at least one row"),
        (M::POST, "/v1/owned/file_paths".into(), br#"[{"name": "ok"}, {"size_bytes": "big"}]"#.to_vec(), 400, "entry 1"),
        (M::POST, "/v1/batch".into(), br#"[{"op": "create", "resource": "tags", "fields": {"name": "a"}}, {"op": "explode", "resource": "tags"}]"#.to_vec(), 400, "entry 1"),
        (M::POST, "/v1/batch".into(), br#"[{"op": "create", "resource": "tags", "fields": {"name": "a"}}, {"op": "update", "resource": "tags", "uuid": "00000000-0000-7000-8000-000000000001", "fields": {"name": "b"}}]"#.to_vec(), 404, "entry 1"),
        (M::POST, "/v1/batch".into(), br#"[]"#.to_vec(), 400, "empty"),
        (M::GET, "/v1/nothing-here".into(), vec![], 404, "no such route"),
        (M::PUT, "/v1/shared/tags".into(), vec![], 405, "method not allowed"),
        (M::GET, "/v1/owned/file_paths?owner=bob".into(), vec![], 400, "not a UUID"),
        (M::GET, "/v1/shared/file_paths".into(), vec![], 400, "owned"),
    ];
    for (method, path, body, want, says) in cases {
        let (status, resp) = raw(&n, method.clone(), &path, body).await;
        assert_eq!(status, want, "{method} {path}: {resp}");
        let msg = error_of(&resp);
        assert!(
            msg.contains(says),
            "{method} {path}: error {msg:?} should mention {says:?}"
        );
    }
    // A body over the limit is refused before it is read: the answer comes after the
    // headers alone (a client still sending the body may see the connection closed).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(n.node().api_addr())
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/owned/file_paths HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            n.node().api_token(),
            murmur::node::api::BODY_LIMIT + 1024
        );
        c.write_all(head.as_bytes()).await.expect("write");
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("--api-body-limit"), "{answer}");
    }

    assert_eq!(
        n.get("/v1/digest").await.1,
        before,
        "bad input changed nothing"
    );
    assert_eq!(
        n.node().store().version_vector(),
        versions,
        "bad input committed no op"
    );
    assert_eq!(
        n.get(&format!("/v1/shared/tags/{tag}")).await.1["name"],
        "keep"
    );
}

/// A value or a row above `MAX_ROW_BYTES` gets 413 naming the limit, and is not written;
/// one at the limit is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_above_the_maximum_gets_413_naming_the_limit() {
    init_tracing();
    let (_sd, secret) = secret_file();
    let n = TestNode::new(&secret).await;
    let max = murmur::store::MAX_ROW_BYTES;
    let (status, body) = n
        .post(
            "/v1/shared/comments",
            serde_json::json!({"content": "x".repeat(max)}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_of(&body).contains(&max.to_string()), "{body}");
    assert!(error_of(&body).contains("MAX_ROW_BYTES"), "{body}");
    let (status, body) = n
        .post(
            "/v1/owned/file_paths",
            serde_json::json!([{"name": "y".repeat(max)}]),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(n.node().store().count_rows("comments").await.unwrap(), 0);
    let (status, body) = n
        .post(
            "/v1/shared/comments",
            serde_json::json!({"content": "x".repeat(max - 9)}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}
