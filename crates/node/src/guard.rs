//! The local API's defences, in front of every handler: only the user's own programs get in.
//!
//! Listening on 127.0.0.1 is not enough. Any web page the user visits may send requests to
//! any address (a `text/plain` or form POST needs no permission from the browser), and with
//! DNS rebinding it may read the answers; other local users and, in a container, the LAN
//! may reach the port too. So, outermost first:
//!
//! 1. **Host**: a request whose `Host` is not a loopback name or address (or a name given
//!    with `--api-allow-host`) is refused with 403. A rebound name (`attacker.example`)
//!    is sent as the Host, so a page never reads an answer.
//! 2. **CORS**, only when `--api-allow-origin` names origins: preflights and CORS headers
//!    for those origins. Without it no CORS header is ever sent.
//! 3. **Token**: every call but `GET /v1/health` needs `Authorization: Bearer <token>`,
//!    the content of `<data-dir>/api.token`, compared in constant time; else 401.
//! 4. **JSON only**: a request with a body (and every POST, PUT and PATCH) must be
//!    `Content-Type: application/json`; else 415. Browsers cannot send that type to
//!    another origin without a preflight.
//! 5. **Bounds**: bodies over `--api-body-limit` get 413; at most `--api-max-writes` write
//!    requests run at once, later ones wait (their bodies unread, so waiting costs no
//!    memory). Rows per request are capped by [`parse_array`], which the handlers call.
//!
//! Each refusal is `{"error": …}` saying what to do, and happens before any handler runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Json, Response};
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::{Value as J, json};
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::token::ApiToken;

/// Default largest request body: 100k owned rows of a typical size fit.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Default most rows of one owned POST, and entries of one batch.
pub const MAX_ROWS: usize = 100_000;
/// Default most write requests handled at once (the store has one writer anyway).
pub const MAX_WRITES: usize = 2;

/// The API's token file and limits (see `murmur run --help`).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Where the token is kept (default `<data-dir>/api.token`).
    pub token_file: Option<PathBuf>,
    /// Host names answered besides the loopback ones.
    pub allow_hosts: Vec<String>,
    /// Web origins allowed by CORS (none by default).
    pub allow_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Most rows per owned POST, entries per batch.
    pub max_rows: usize,
    /// Most write requests at once.
    pub max_writes: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token_file: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            body_limit: BODY_LIMIT,
            max_rows: MAX_ROWS,
            max_writes: MAX_WRITES,
        }
    }
}

/// A configured host or origin that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// `--api-allow-origin` is not `scheme://host[:port]`.
    #[error(
        "`{0}` is not a web origin: give scheme, host and port only, e.g. http://localhost:3000"
    )]
    BadOrigin(String),
    /// `--api-allow-host` is empty or not a host name.
    #[error("`{0}` is not a host name (give a name or address, with or without a port)")]
    BadHost(String),
}

/// What the checks share.
struct Guard {
    token: ApiToken,
    /// Configured extra host names, lowercase, without port.
    hosts: Vec<String>,
    body_limit: usize,
    writes: Arc<Semaphore>,
}

/// Puts the defences in front of `router` (whose state is already given).
pub fn protect(router: Router, token: ApiToken, opts: &ApiOptions) -> Result<Router, GuardError> {
    let hosts = opts
        .allow_hosts
        .iter()
        .map(|h| {
            let name = host_part(h.trim());
            if name.is_empty() || name.contains(['/', ' ', '@']) {
                Err(GuardError::BadHost(h.clone()))
            } else {
                Ok(name)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let guard = Arc::new(Guard {
        token,
        hosts,
        body_limit: opts.body_limit,
        writes: Arc::new(Semaphore::new(opts.max_writes.max(1))),
    });
    // `layer` wraps what is there: the last one added runs first.
    let mut r = router
        .layer(DefaultBodyLimit::max(opts.body_limit))
        .layer(from_fn_with_state(guard.clone(), check_request));
    if !opts.allow_origins.is_empty() {
        r = r.layer(cors(&opts.allow_origins)?);
    }
    Ok(r.layer(from_fn_with_state(guard, check_host)))
}

fn cors(origins: &[String]) -> Result<CorsLayer, GuardError> {
    let list = origins
        .iter()
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"));
            match rest {
                Some(r) if !r.is_empty() && !r.contains(['/', '?', '#', ' ']) => {
                    HeaderValue::from_str(o).map_err(|_| GuardError::BadOrigin(o.to_owned()))
                }
                _ => Err(GuardError::BadOrigin(o.to_owned())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600)))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// At most this much of a refused value is echoed in an error.
fn shown(v: &str) -> String {
    v.chars().take(80).collect()
}

/// The host of a `Host` value: without port and brackets, lowercase, no trailing dot.
fn host_part(v: &str) -> String {
    let h = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// Whether a host (from [`host_part`]) is this machine's loopback.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Guard {
    fn host_allowed(&self, value: &str) -> bool {
        let h = host_part(value);
        is_loopback(&h) || self.hosts.contains(&h)
    }
}

async fn check_host(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        // HTTP/2 carries it in the URI.
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    };
    match host {
        Some(h) if g.host_allowed(&h) => next.run(req).await,
        Some(h) => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "requests for host `{}` are refused: the API answers only requests addressed \
                 to localhost, 127.0.0.1 or [::1] (against DNS rebinding); to reach it by \
                 another name, start the node with --api-allow-host <name>",
                shown(&h)
            ),
        ),
        None => refuse(
            StatusCode::BAD_REQUEST,
            "the request has no (readable) Host header".into(),
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Whether a `Content-Type` is JSON (`application/json`, any case, with parameters; a
/// charset, when given, must be UTF-8).
fn is_json(v: &HeaderValue) -> bool {
    let Ok(v) = v.to_str() else {
        return false;
    };
    let mut parts = v.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|p| match p.split_once('=') {
            Some((k, val)) if k.trim().eq_ignore_ascii_case("charset") => {
                let val = val.trim().trim_matches('"');
                val.eq_ignore_ascii_case("utf-8") || val.eq_ignore_ascii_case("utf8")
            }
            _ => true,
        })
}

/// The declared body length, when there is one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn has_body(req: &Request) -> bool {
    matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        || content_length(req.headers()).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

async fn check_request(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let health = req.uri().path() == "/v1/health" && matches!(method, Method::GET | Method::HEAD);
    if !health {
        let refused = match bearer(req.headers()) {
            None => Some(
                "this call needs the API token: send `Authorization: Bearer <token>`, the \
                 token being the content of <data-dir>/api.token",
            ),
            Some(t) if !g.token.matches(t) => Some(
                "wrong API token: send the content of <data-dir>/api.token (it changes when \
                 that file is deleted and the node restarted)",
            ),
            Some(_) => None,
        };
        if let Some(m) = refused {
            let mut r = refuse(StatusCode::UNAUTHORIZED, m.into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"murmur\""),
            );
            return r;
        }
    }
    if has_body(&req) {
        match req.headers().get(header::CONTENT_TYPE) {
            Some(ct) if is_json(ct) => {}
            ct => {
                let got = ct
                    .map(|v| format!("`{}`", shown(&String::from_utf8_lossy(v.as_bytes()))))
                    .unwrap_or_else(|| "none".into());
                return refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "the body must be JSON sent with `Content-Type: application/json` \
                         (got {got})"
                    ),
                );
            }
        }
        if let Some(n) = content_length(req.headers()).filter(|&n| n > g.body_limit as u64) {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is {n} bytes, more than this node takes ({} bytes, \
                     --api-body-limit): split it into smaller requests",
                    g.body_limit
                ),
            );
        }
    }
    let _permit = if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        None
    } else {
        match g.writes.clone().acquire_owned().await {
            Ok(p) => Some(p),
            // The semaphore is never closed; were it, refusing is the safe answer.
            Err(_) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the node is shutting down".into(),
                );
            }
        }
    };
    next.run(req).await
}

/// Why a body is not an array the handlers take.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// More elements than allowed.
    #[error(
        "more than {max} rows in one request (--api-max-rows): split them into several requests"
    )]
    TooMany {
        /// The cap.
        max: usize,
    },
    /// Not a JSON array.
    #[error("the body must be a JSON array")]
    NotArray,
    /// Not JSON.
    #[error("malformed JSON body: {0}")]
    Json(serde_json::Error),
}

/// Parses a JSON array of at most `max` elements, stopping at the first one over, so that
/// a body of a million tiny rows costs no more memory than `max` of them.
pub fn parse_array(body: &[u8], max: usize) -> Result<Vec<J>, ArrayError> {
    let over = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let res = Capped { max, over: &over }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|_| v));
    res.map_err(|e| {
        if over.get() {
            ArrayError::TooMany { max }
        } else if e.classify() == serde_json::error::Category::Data {
            ArrayError::NotArray
        } else {
            ArrayError::Json(e)
        }
    })
}

struct Capped<'a> {
    max: usize,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Capped<'_> {
    type Value = Vec<J>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<J>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Capped<'_> {
    type Value = Vec<J>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<J>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<J>()? {
            if out.len() == self.max {
                self.over.set(true);
                return Err(A::Error::custom("too many rows"));
            }
            out.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for h in [
            "localhost",
            "LOCALHOST:7700",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:7700",
            "[::1]",
            "[::1]:7700",
        ] {
            assert!(is_loopback(&host_part(h)), "{h}");
        }
        for h in [
            "attacker.example",
            "attacker.example:7700",
            "localhost.attacker.example",
            "0.0.0.0:7700",
            "192.168.1.2",
            "[::2]:7700",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!is_loopback(&host_part(h)), "{h}");
        }
        assert_eq!(host_part("Node1:7700"), "node1");
    }

    #[test]
    fn json_types() {
        let ok = |s: &str| is_json(&HeaderValue::from_str(s).unwrap());
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(ok("application/json;charset=\"UTF-8\""));
        assert!(!ok("application/json; charset=latin1"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("multipart/form-data; boundary=x"));
        assert!(!ok("application/jsonx"));
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn arrays_are_capped_while_parsed() {
        assert_eq!(parse_array(b" [1, 2] ", 2).unwrap().len(), 2);
        assert!(matches!(
            parse_array(b"[1, 2, 3]", 2),
            Err(ArrayError::TooMany { max: 2 })
        ));
        let huge: Vec<u8> = std::iter::once(b'[')
            .chain(std::iter::repeat_n(&b"{},"[..], 400_000).flatten().copied())
            .chain(*b"{}]")
            .collect();
        assert!(matches!(
            parse_array(&huge, 10),
            Err(ArrayError::TooMany { .. })
        ));
        assert!(matches!(
            parse_array(br#"{"a": 1}"#, 2),
            Err(ArrayError::NotArray)
        ));
        assert!(matches!(parse_array(b"[1,", 2), Err(ArrayError::Json(_))));
        assert!(matches!(parse_array(b"[1] x", 2), Err(ArrayError::Json(_))));
    }
}
