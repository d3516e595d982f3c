//! Membership with the binary (issue 19): `murmur init`, `murmur invite`, `murmur run
//! --join`, `murmur devices`, `murmur devices remove`, as a person types them.

use std::path::{Path, PathBuf};
use std::process::Command;

use murmur_testkit::procs::{Proc, free_port, poll};
use murmur_testkit::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_murmur");

fn murmur(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run murmur");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn proc(dir: &Path, name: &str, secret: &Path, token: &Path, args: Vec<String>) -> Proc {
    let mut p = Proc {
        bin: PathBuf::from(BIN),
        child: None,
        data: dir.join(name),
        api: free_port(),
        p2p: free_port(),
        peers: Vec::new(),
        secret: secret.to_path_buf(),
        log: dir.join(format!("{name}.log")),
        args,
        token_file: token.to_path_buf(),
    };
    p.spawn();
    p
}

fn client_args(p: &Proc) -> Vec<String> {
    vec![
        "--api".into(),
        format!("127.0.0.1:{}", p.api),
        "--api-token-file".into(),
        p.token_file.display().to_string(),
    ]
}

async fn get(http: &reqwest::Client, p: &Proc, path: &str) -> serde_json::Value {
    match http.get(p.url(path)).send().await {
        Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_invite_join_list_remove_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("library.key");
    let token = dir.path().join("api.token");
    write_secret(&secret);
    write_private(&token, &random_hex());
    let http = client_with_token(std::fs::read_to_string(&token).unwrap().trim())
        .build()
        .unwrap();
    let laptop_dir = dir.path().join("laptop");
    let (ok, out) = murmur(&[
        "init",
        "--data-dir",
        laptop_dir.to_str().unwrap(),
        "--device-name",
        "laptop",
        "--library-secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("founder"), "{out}");
    let laptop = proc(dir.path(), "laptop", &secret, &token, vec![]);
    poll("the laptop answers", || async {
        get(&http, &laptop, "/v1/health").await["status"] == "ok"
    })
    .await;
    let (status, body) = {
        let r = http
            .post(laptop.url("/v1/shared/tags"))
            .json(&json!({"name": "holiday"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 201, "{body}");

    // murmur invite --out phone.invite
    let invite = dir.path().join("phone.invite");
    let mut args: Vec<String> = vec!["invite".into(), "--expires".into(), "10m".into()];
    args.extend(client_args(&laptop));
    args.extend(["--out".into(), invite.display().to_string()]);
    let (ok, out) = murmur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{out}");
    // murmur run --join phone.invite
    let phone = proc(
        dir.path(),
        "phone",
        &secret,
        &token,
        vec![
            "--join".into(),
            invite.display().to_string(),
            "--device-name".into(),
            "phone".into(),
        ],
    );
    poll("the phone gets the laptop's tag", || async {
        get(&http, &phone, "/v1/shared/tags").await["rows"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    })
    .await;

    // murmur devices
    let mut args: Vec<String> = vec!["devices".into()];
    args.extend(client_args(&laptop));
    let (ok, out) = murmur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("phone") && l.contains("member")),
        "{out}"
    );
    assert!(out.contains("laptop (this)"), "{out}");

    // The same invitation again: refused, with a clear message in the log.
    let thief = proc(
        dir.path(),
        "thief",
        &secret,
        &token,
        vec![
            "--join".into(),
            invite.display().to_string(),
            "--device-name".into(),
            "thief".into(),
        ],
    );
    poll("the reused invitation is refused", || async {
        std::fs::read_to_string(&thief.log)
            .unwrap_or_default()
            .contains("already used")
    })
    .await;

    // murmur devices remove phone
    let mut args: Vec<String> = vec!["devices".into(), "remove".into(), "phone".into()];
    args.extend(client_args(&laptop));
    let (ok, out) = murmur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok && out.contains("removed phone"), "{out}");
    poll("the phone is removed and disconnected", || async {
        get(&http, &laptop, "/v1/devices").await["devices"]
            .as_array()
            .is_some_and(|d| {
                d.iter().any(|r| {
                    r["name"] == "phone" && r["state"] == "removed" && r["connected"] == false
                })
            })
    })
    .await;
    drop(phone);
    drop(thief);
    drop(laptop);
}
