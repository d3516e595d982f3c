//! The subcommands that talk to a running node's API and print readable tables.

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use murmur_store::SchemaRelation;
use serde_json::Value as J;

use crate::config::ClientArgs;
use crate::status::Status;
use crate::token::{ApiToken, TOKEN_FILE};

fn url(api: &str, path: &str) -> String {
    if api.starts_with("http://") || api.starts_with("https://") {
        return format!("{}{path}", api.trim_end_matches('/'));
    }
    // A node listening on 0.0.0.0 (as in a container, where MURMUR_API=0.0.0.0:7700 is
    // also what this command reads) is reached on loopback: the API answers only requests
    // addressed to a loopback Host.
    match api.parse::<std::net::SocketAddr>() {
        Ok(mut a) if a.ip().is_unspecified() => {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
            format!("http://{a}{path}")
        }
        _ => format!("http://{api}{path}"),
    }
}

/// The node's API token: `--api-token-file`, else `<data-dir>/api.token`.
fn token(args: &ClientArgs) -> anyhow::Result<ApiToken> {
    let path = args
        .api_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(TOKEN_FILE));
    ApiToken::read(&path).with_context(|| {
        format!(
            "cannot use the API token {}: pass the node's --data-dir, or --api-token-file (MURMUR_API_TOKEN_FILE) naming a copy of its api.token",
            path.display()
        )
    })
}

async fn get(args: &ClientArgs, path: &str) -> anyhow::Result<J> {
    get_within(args, path, std::time::Duration::from_secs(5)).await
}

/// [`get`], waiting up to `timeout` for the answer.
async fn get_within(
    args: &ClientArgs,
    path: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<J> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let mut req = client.get(url(&args.api, path));
    // Health is the one call without a token (so that a container healthcheck needs none).
    if path != "/v1/health" {
        req = req.bearer_auth(token(args)?.as_str());
    }
    answer(args, req).await
}

/// Sends `req` to the node and returns its JSON answer, or an error that says what went wrong.
async fn answer(args: &ClientArgs, req: reqwest::RequestBuilder) -> anyhow::Result<J> {
    let resp = req.send().await.with_context(|| {
        format!(
            "no murmur node answers at {} (is `murmur run` running? see --api)",
            args.api
        )
    })?;
    let status = resp.status();
    let body: J = resp
        .json()
        .await
        .context("the node sent a body that is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", body["error"].as_str().unwrap_or("error"));
    }
    Ok(body)
}

/// Sends a write (`POST` or `DELETE`) with the token and returns the JSON answer.
async fn send(
    args: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<J>,
) -> anyhow::Result<J> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut req = client
        .request(method, url(&args.api, path))
        .bearer_auth(token(args)?.as_str());
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(args, req).await
}

/// `murmur init`: a new library with this device as its founder.
pub async fn init(a: &crate::config::InitArgs) -> anyhow::Result<()> {
    let secret = match (&a.library_secret, &a.library_secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => Some(crate::identity::LibrarySecret::read(f)?),
        (None, None) => None,
    };
    let id = crate::init(&a.data_dir, a.device_name.as_deref(), &a.devices, secret).await?;
    println!(
        "library {id} in {}: this device is its founder",
        a.data_dir.display()
    );
    if !a.devices.is_empty() {
        println!(
            "named in advance: {} (each is admitted when it starts with the library secret and \
             `--device-name <name> --join named`)",
            a.devices.join(", ")
        );
    }
    println!(
        "start it with `murmur run --data-dir {}`; invite a device with `murmur invite`",
        a.data_dir.display()
    );
    Ok(())
}

/// `murmur invite`: one invitation, printed or written to `--out` (0600).
pub async fn invite(a: &crate::config::InviteArgs) -> anyhow::Result<()> {
    let expires = humantime::format_duration(a.expires).to_string();
    let body = send(
        &a.client,
        reqwest::Method::POST,
        "/v1/invites",
        Some(serde_json::json!({ "expires": expires })),
    )
    .await?;
    let inv = body["invitation"].as_str().unwrap_or_default();
    match &a.out {
        Some(path) => {
            crate::files::write_private(path, format!("{inv}\n").as_bytes())?;
            eprintln!(
                "wrote an invitation for one device to {} (valid until {}); on the new device: \
                 murmur run --join {}",
                path.display(),
                s(&body["expires"]),
                path.display()
            );
        }
        None => {
            println!("{inv}");
            eprintln!(
                "an invitation for one device, valid until {}; on the new device: murmur run --join <invitation>",
                s(&body["expires"])
            );
        }
    }
    Ok(())
}

/// `murmur devices` and `murmur devices remove`.
pub async fn devices(a: &crate::config::DevicesArgs) -> anyhow::Result<()> {
    match &a.action {
        Some(crate::config::DevicesAction::Remove {
            device,
            forget_data,
            client,
        }) => {
            // A name is resolved by the node; a path segment must be escaped.
            let seg: String = device
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let path = format!("/v1/devices/{seg}?forget_data={forget_data}");
            let body = send(client, reqwest::Method::DELETE, &path, None).await?;
            println!(
                "removed {} ({}): every node refuses it from now on{}",
                device,
                s(&body["client"]),
                if *forget_data {
                    "; its owned rows are deleted everywhere"
                } else {
                    ""
                }
            );
            Ok(())
        }
        None => {
            let body = get(&a.client, "/v1/devices").await?;
            if a.client.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            let d: crate::devices::Devices = serde_json::from_value(body)?;
            print!("{}", devices_text(&d));
            Ok(())
        }
    }
}

fn devices_text(d: &crate::devices::Devices) -> String {
    let rows: Vec<Vec<String>> = d
        .devices
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.name, if r.this_device { " (this)" } else { "" }),
                r.client.to_string(),
                r.state.clone(),
                cut(&text(r.peer_id.as_deref()), 16),
                r.admitted_by.map_or("-".into(), |u| cut(&u.to_string(), 8)),
                when(r.admitted_at),
                when(r.last_seen),
                when(r.last_synchronized),
                if r.connected { "yes" } else { "no" }.into(),
                when(r.removed_at),
            ]
        })
        .collect();
    let mut out = if d.enforced {
        String::new()
    } else {
        "membership not enforced: this library has no founder recorded (it predates \
         membership), so every holder of the secret is a member; removals are enforced\n"
            .to_owned()
    };
    out.push_str(&table(
        &[
            "NAME",
            "CLIENT",
            "STATE",
            "PEER ID",
            "ADMITTED BY",
            "ADMITTED",
            "LAST SEEN",
            "LAST SYNCHRONIZED",
            "CONNECTED",
            "REMOVED",
        ],
        &rows,
    ));
    if !d.invitations.is_empty() {
        out.push_str(&format!(
            "{} invitation(s) not used yet\n",
            d.invitations.len()
        ));
    }
    out
}

fn s(v: &J) -> String {
    match v {
        J::Null => "-".into(),
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as an aligned table.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// A time as the JSON spells it (RFC 3339, UTC as `Z`), or `-`.
fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

/// A text, or `-`.
fn text(t: Option<&str>) -> String {
    t.unwrap_or("-").to_owned()
}

/// The first `n` characters of `t`, with an ellipsis if there were more.
fn cut(t: &str, n: usize) -> String {
    match t.char_indices().nth(n) {
        Some((end, _)) => format!("{}…", &t[..end]),
        None => t.to_owned(),
    }
}

fn peer_rows(status: &Status) -> Vec<Vec<String>> {
    status
        .peers
        .iter()
        .map(|p| {
            vec![
                cut(&p.client_uuid.to_string(), 8),
                cut(&text(p.peer_id.as_deref()), 16),
                if p.connected { "yes" } else { "no" }.into(),
                text(p.discovery.as_deref()),
                text(p.address.as_deref()),
                when(p.last_seen),
                when(p.last_synchronized),
                [
                    p.stale.then_some("stale"),
                    match p.schema {
                        Some(SchemaRelation::Newer) => Some("newer schema"),
                        Some(SchemaRelation::Older) => Some("older schema"),
                        Some(SchemaRelation::Other) => Some("other schema"),
                        Some(SchemaRelation::Same) | None => None,
                    },
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            ]
        })
        .collect()
}

const PEER_HEADERS: [&str; 8] = [
    "CLIENT",
    "PEER",
    "CONNECTED",
    "FOUND BY",
    "ADDRESS",
    "LAST SEEN",
    "LAST SYNCED",
    "",
];

/// The node's `/v1/status`.
async fn get_status(args: &ClientArgs) -> anyhow::Result<Status> {
    serde_json::from_value(get(args, "/v1/status").await?)
        .context("the node's status is not the document this murmur reads")
}

/// `murmur status`.
pub async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let st = get_status(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    print!("{}", status_text(&st));
    Ok(())
}

/// What `murmur status` prints.
fn status_text(st: &Status) -> String {
    let mut out = String::new();
    out += &format!("client      {}\n", st.client_uuid);
    out += &format!("peer id     {}\n", st.peer_id);
    out += &format!("library     {}\n", st.library_id);
    out += &format!("listening   {}\n", st.listen_addrs.join(", "));
    out += &format!("op log      {} pending operations\n", st.pending_operations);
    match &st.join {
        Some(crate::sync::JoinStatus::Pending) => {
            out += "joining     the invitation is sent to the members met; waiting for one to admit this device\n"
        }
        Some(crate::sync::JoinStatus::Failed(why)) => {
            out += &format!("joining     refused: {why}\n")
        }
        Some(crate::sync::JoinStatus::Joined) => {
            out += "joining     admitted: this device is a member\n"
        }
        _ => {}
    }
    if !st.waiting.is_empty() {
        let why: Vec<String> = st.waiting.iter().map(|(r, n)| format!("{n} {r}")).collect();
        out += &format!("waiting     {} (kept for a newer schema)\n", why.join(", "));
    }
    let connected = st.peers.iter().filter(|p| p.connected).count();
    out += &format!(
        "peers       {connected} connected, {} known\n",
        st.peers.len()
    );
    if !st.progress.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = st
            .progress
            .iter()
            .map(|w| {
                let total = w.total.max(1);
                vec![
                    w.kind.as_str().to_owned(),
                    cut(&w.peer_id, 16),
                    cut(&text(w.client_uuid.map(|c| c.to_string()).as_deref()), 8),
                    format!("{}/{total}", w.done),
                    format!("{:.0}%", w.done as f64 * 100.0 / total as f64),
                ]
            })
            .collect();
        out += &table(&["WORK", "PEER", "CLIENT", "DONE", ""], &rows);
    }
    let rows = peer_rows(st);
    if !rows.is_empty() {
        out.push('\n');
        out += &table(&PEER_HEADERS, &rows);
    }
    out
}

/// `murmur peers`.
pub async fn peers(args: &ClientArgs) -> anyhow::Result<()> {
    let st = get_status(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st.peers)?);
        return Ok(());
    }
    let rows = peer_rows(&st);
    if rows.is_empty() {
        println!("no peers known yet");
    } else {
        print!("{}", table(&PEER_HEADERS, &rows));
    }
    Ok(())
}

/// `murmur digest`.
pub async fn digest(args: &ClientArgs) -> anyhow::Result<()> {
    let d = get(args, "/v1/digest").await?;
    if args.json {
        println!("{d}");
    } else {
        println!("{}  {} rows", s(&d["digest"]), s(&d["rows"]));
    }
    Ok(())
}

/// `murmur diff --peer <peer id or client>`: the rows where the node and that peer differ.
pub async fn diff(args: &crate::config::DiffArgs) -> anyhow::Result<()> {
    let path = format!("/v1/diff?peer={}", args.peer);
    let d = get_within(&args.client, &path, std::time::Duration::from_secs(600)).await?;
    if args.client.json {
        println!("{d}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = d["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| vec![s(&r["resource"]), s(&r["uuid"])])
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        println!(
            "no difference with {} ({} requests)",
            s(&d["peer"]),
            s(&d["requests"])
        );
    } else {
        print!("{}", table(&["RESOURCE", "UUID"], &rows));
        println!(
            "{} rows differ from {} ({} requests{})",
            rows.len(),
            s(&d["peer"]),
            s(&d["requests"]),
            if d["truncated"].as_bool() == Some(true) {
                "; stopped at a bound, there may be more"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// `murmur health`: exit status only (and one line).
pub async fn health(args: &ClientArgs) -> anyhow::Result<()> {
    let h = get(args, "/v1/health").await?;
    println!("{}", s(&h["status"]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_reached_on_loopback() {
        assert_eq!(url("0.0.0.0:7700", "/x"), "http://127.0.0.1:7700/x");
        assert_eq!(url("[::]:7700", "/x"), "http://[::1]:7700/x");
        assert_eq!(url("127.0.0.1:7701", "/x"), "http://127.0.0.1:7701/x");
        assert_eq!(url("localhost:7701", "/x"), "http://localhost:7701/x");
        assert_eq!(url("http://h:1/", "/x"), "http://h:1/x");
    }

    #[test]
    fn times_print_as_the_json_has_them() {
        for t in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.678Z",
            "2026-01-02T03:04:05.678901Z",
            "2026-01-02T03:04:05.678901234Z",
        ] {
            let t: DateTime<Utc> = t.parse().unwrap();
            assert_eq!(
                when(Some(t)),
                serde_json::to_value(t).unwrap().as_str().unwrap()
            );
        }
        assert_eq!(when(None), "-");
    }

    #[test]
    fn status_prints_its_peers_and_work() {
        let st: Status = serde_json::from_value(serde_json::json!({
            "client_uuid": "00000000-0000-0000-0000-000000000001",
            "peer_id": "12D3KooWme",
            "library_id": "lib",
            "listen_addrs": ["/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1"],
            "pending_operations": 3,
            "peers": [{
                "client_uuid": "00000000-0000-0000-0000-000000000002",
                "peer_id": "12D3KooWthemthemthem",
                "connected": true,
                "address": "/ip4/127.0.0.1/tcp/2",
                "discovery": "mdns",
                "last_seen": "2026-01-02T03:04:05.678Z",
                "last_synchronized": null,
                "schema": "newer",
                "stale": false,
            }, {
                "client_uuid": "00000000-0000-0000-0000-000000000003",
                "peer_id": null,
                "connected": false,
                "address": null,
                "discovery": null,
                "last_seen": null,
                "last_synchronized": null,
                "stale": true,
            }],
            "progress": [{"client_uuid": "00000000-0000-0000-0000-000000000002", "peer_id": "12D3KooWthemthemthem", "kind": "snapshot", "done": 1, "total": 4}],
            "version_vector": {},
            "waiting": {"unknown_field": 2, "unknown_resource": 1},
        }))
        .unwrap();
        let expected = "\
client      00000000-0000-0000-0000-000000000001
peer id     12D3KooWme
library     lib
listening   /ip4/127.0.0.1/tcp/1, /ip4/10.0.0.1/tcp/1
op log      3 pending operations
waiting     2 unknown_field, 1 unknown_resource (kept for a newer schema)
peers       1 connected, 2 known

WORK      PEER               CLIENT     DONE
snapshot  12D3KooWthemthem…  00000000…  1/4   25%

CLIENT     PEER               CONNECTED  FOUND BY  ADDRESS               LAST SEEN                 LAST SYNCED
00000000…  12D3KooWthemthem…  yes        mdns      /ip4/127.0.0.1/tcp/2  2026-01-02T03:04:05.678Z  -            newer schema
00000000…  -                  no         -         -                     -                         -            stale
";
        assert_eq!(status_text(&st), expected);
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
