//! The subcommands that talk to a running node's API and print readable tables.

use anyhow::{Context, bail};
use serde_json::Value as J;

use crate::config::ClientArgs;
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
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut req = client.get(url(&args.api, path));
    // Health is the one call without a token (so that a container healthcheck needs none).
    if path != "/v1/health" {
        req = req.bearer_auth(token(args)?.as_str());
    }
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

fn s(v: &J) -> String {
    match v {
        J::Null => "-".into(),
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &J, n: usize) -> String {
    let t = s(v);
    if t.len() > n {
        format!("{}…", &t[..n])
    } else {
        t
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

fn peer_rows(status: &J) -> Vec<Vec<String>> {
    status["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        short(&p["client_uuid"], 8),
                        short(&p["peer_id"], 16),
                        if p["connected"].as_bool() == Some(true) {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        s(&p["discovery"]),
                        s(&p["address"]),
                        s(&p["last_seen"]),
                        s(&p["last_synchronized"]),
                        if p["stale"].as_bool() == Some(true) {
                            "stale".into()
                        } else {
                            "".into()
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
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

/// `murmur status`.
pub async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let st = get(args, "/v1/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!("client      {}", s(&st["client_uuid"]));
    println!("peer id     {}", s(&st["peer_id"]));
    println!("library     {}", s(&st["library_id"]));
    let listen: Vec<String> = st["listen_addrs"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    println!("listening   {}", listen.join(", "));
    println!(
        "op log      {} pending operations",
        s(&st["pending_operations"])
    );
    let connected = st["peers"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["connected"] == J::Bool(true)).count())
        .unwrap_or(0);
    println!(
        "peers       {connected} connected, {} known",
        st["peers"].as_array().map_or(0, Vec::len)
    );
    if let Some(p) = st["progress"].as_array().filter(|p| !p.is_empty()) {
        println!();
        let rows: Vec<Vec<String>> = p
            .iter()
            .map(|w| {
                let done = w["done"].as_u64().unwrap_or(0);
                let total = w["total"].as_u64().unwrap_or(0).max(1);
                vec![
                    s(&w["kind"]),
                    short(&w["peer_id"], 16),
                    format!("{done}/{total}"),
                    format!("{:.0}%", done as f64 * 100.0 / total as f64),
                ]
            })
            .collect();
        print!("{}", table(&["WORK", "PEER", "DONE", ""], &rows));
    }
    let rows = peer_rows(&st);
    if !rows.is_empty() {
        println!();
        print!("{}", table(&PEER_HEADERS, &rows));
    }
    Ok(())
}

/// `murmur peers`.
pub async fn peers(args: &ClientArgs) -> anyhow::Result<()> {
    let st = get(args, "/v1/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st["peers"])?);
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
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
