//! Requests to a node's HTTP API. Every request of this crate to a node (in-process or a
//! process) is built by [`request`], so that what every request carries (e.g. a credential)
//! is added in one place.

use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value as J;

/// A request to `url`, a node's API address followed by a path.
pub fn request(http: &Client, method: Method, url: &str) -> RequestBuilder {
    http.request(method, url)
}

/// Sends `req` with the JSON `body` (if any); returns the status and the JSON body (null
/// when there is none), or the transport error.
pub async fn send(req: RequestBuilder, body: Option<&J>) -> reqwest::Result<(u16, J)> {
    let req = match body {
        Some(b) => req.json(b),
        None => req,
    };
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(J::Null)))
}
