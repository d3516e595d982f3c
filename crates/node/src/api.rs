//! The local HTTP API (JSON). Bad input gets a 4xx with `{"error": ...}` saying what is
//! wrong, and changes nothing. Handlers parse, call the store and format the reply; what a
//! write does after its commit (publish, events, metrics) happens in [`crate::feed`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use murmur_store::{BatchEntry, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value as J, json};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::status::{Status, StatusSource};

pub use crate::guard::BODY_LIMIT;

/// Most rows of one list page (`?limit=` is clamped to it); `next` says when there are more.
pub const PAGE_MAX: usize = 5_000;
/// Rows of a list page when `?limit=` is not given.
pub const PAGE_DEFAULT: usize = 1_000;
// A page reads one row more than it returns, to know whether there are more.
const _: () = assert!(PAGE_MAX < murmur_store::MAX_READ);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Row changes, for `/v1/events`.
    pub events: broadcast::Sender<murmur_store::RowEvent>,
    /// Status.
    pub status: Arc<StatusSource>,
    /// The library's devices, invitations, removals.
    pub devices: Arc<crate::devices::DevicesSource>,
    /// Most rows of one owned POST, entries of one batch.
    pub max_rows: usize,
}

/// An API error: a status and a message for `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::UnknownResource(_) | StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists { .. } => StatusCode::CONFLICT,
            StoreError::NotOwner { .. } => StatusCode::FORBIDDEN,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::BatchEntry { source, .. } => {
                return ApiError::new(ApiError::from_ref(source), e.to_string());
            }
            e if e.is_bad_input() => StatusCode::BAD_REQUEST,
            _ => {
                // Never leak SQL details to the client; the log has them.
                tracing::error!("store error: {e}");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error, see the node's log",
                );
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl ApiError {
    fn from_ref(e: &StoreError) -> StatusCode {
        match e {
            StoreError::UnknownResource(_) | StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists { .. } => StatusCode::CONFLICT,
            StoreError::NotOwner { .. } => StatusCode::FORBIDDEN,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            e if e.is_bad_input() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::guard::ArrayError> for ApiError {
    fn from(e: crate::guard::ArrayError) -> Self {
        let status = match e {
            crate::guard::ArrayError::TooMany { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body ourselves, so malformed JSON gets our error shape.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

fn parse_uuid(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("`{s}` is not a UUID")))
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route(
            "/v1/shared/{resource}",
            get(list_shared).post(create_shared),
        )
        .route(
            "/v1/shared/{resource}/{uuid}",
            get(get_shared).patch(update_shared).delete(delete_shared),
        )
        .route("/v1/owned/{resource}", get(list_owned).post(write_owned))
        .route(
            "/v1/owned/{resource}/{uuid}",
            get(get_owned).delete(delete_owned),
        )
        .route("/v1/batch", axum::routing::post(batch))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{client}", axum::routing::delete(remove_device))
        .route("/v1/invites", axum::routing::post(create_invite))
        .route("/v1/files", get(files))
        .route("/v1/digest", get(digest))
        .route("/v1/diff", get(diff))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; see the README for the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn health() -> Json<J> {
    Json(json!({"status": "ok"}))
}

async fn status(State(s): State<AppState>) -> ApiResult<Json<Status>> {
    Ok(Json(s.status.status().await?))
}

fn object(body: J, what: &str) -> ApiResult<serde_json::Map<String, J>> {
    match body {
        J::Object(m) => Ok(m),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{what} must be a JSON object"),
        )),
    }
}

/// `devices_log` is written by murmur only (invitations, admissions, removals).
fn not_system(resource: &str) -> ApiResult<()> {
    if resource == murmur_store::members::DEVICES_LOG {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "devices_log is written by murmur itself: use `murmur invite` (POST /v1/invites) \
             and `murmur devices remove` (DELETE /v1/devices/{client})",
        ));
    }
    Ok(())
}

async fn list_devices(State(s): State<AppState>) -> ApiResult<Json<crate::devices::Devices>> {
    Ok(Json(s.devices.list().await?))
}

/// The body of `POST /v1/invites`.
#[derive(Debug, Deserialize, Default)]
struct InviteBody {
    /// How long the invitation may be used ("10m", "1h", "7d"; default 1 h).
    expires: Option<String>,
}

async fn create_invite(State(s): State<AppState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let b: InviteBody = if body.is_empty() {
        InviteBody::default()
    } else {
        parse_json(&body)?
    };
    let valid_for = match b.expires.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("`expires`: {e}")))?,
    };
    let (_, doc) = s.devices.invite(valid_for).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

/// The query of `DELETE /v1/devices/{client}`.
#[derive(Debug, Deserialize)]
struct RemoveQuery {
    /// Delete the device's owned rows everywhere.
    #[serde(default)]
    forget_data: bool,
}

async fn remove_device(
    State(s): State<AppState>,
    Path(client): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<Json<J>> {
    use crate::devices::DeviceError;
    match s.devices.remove(&client, q.forget_data).await {
        Ok(c) => Ok(Json(
            json!({"client": c, "removed": true, "forget_data": q.forget_data}),
        )),
        Err(DeviceError::Unknown(d)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no device named {d}"),
        )),
        Err(e @ DeviceError::ThisDevice) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(DeviceError::Store(e)) => Err(e.into()),
    }
}

async fn create_shared(
    State(s): State<AppState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    not_system(&resource)?;
    let mut fields = object(parse_json(&body)?, "the body")?;
    let uuid = match fields.remove("uuid") {
        None | Some(J::Null) => None,
        Some(J::String(u)) => Some(parse_uuid(&u)?),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "`uuid` must be a UUID string",
            ));
        }
    };
    let out = s.store.create_shared(&resource, uuid, fields).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"uuid": out.uuids.first()})),
    ))
}

async fn update_shared(
    State(s): State<AppState>,
    Path((resource, uuid)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<J>> {
    not_system(&resource)?;
    let uuid = parse_uuid(&uuid)?;
    let fields = object(parse_json(&body)?, "the body")?;
    let out = s.store.update_shared(&resource, uuid, fields).await?;
    Ok(Json(json!({"uuid": uuid, "updated": out.ops.len()})))
}

async fn delete_shared(
    State(s): State<AppState>,
    Path((resource, uuid)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    not_system(&resource)?;
    let uuid = parse_uuid(&uuid)?;
    s.store.delete_shared(&resource, uuid).await?;
    Ok(Json(json!({"uuid": uuid, "deleted": true})))
}

/// Paging of list reads.
#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only rows after this UUID.
    after: Option<String>,
    /// At most this many rows (default [`PAGE_DEFAULT`], at most [`PAGE_MAX`]).
    limit: Option<usize>,
    /// Owned rows of this owner only.
    owner: Option<String>,
}

async fn list(s: &AppState, resource: &str, q: ListQuery, owned: bool) -> ApiResult<Json<J>> {
    let def = s.store.registry().get(resource)?;
    if (def.kind == murmur_store::Kind::Owned) != owned {
        return Err(StoreError::WrongKind {
            resource: resource.to_owned(),
            expected: if owned { "owned" } else { "shared" },
            actual: if owned { "shared" } else { "owned" },
        }
        .into());
    }
    let after = q.after.as_deref().map(parse_uuid).transpose()?;
    let owner = q.owner.as_deref().map(parse_uuid).transpose()?;
    let limit = page_limit(q.limit);
    let rows = s.store.list_rows(resource, owner, after, limit + 1).await?;
    Ok(Json(page(rows, limit, "uuid")))
}

fn page_limit(asked: Option<usize>) -> usize {
    asked.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX)
}

/// `{"rows": [...], "next": …}` from up to `limit + 1` rows: `next` is the cursor to pass
/// as `?after=` for the rows after these, `null` when there are none.
fn page(mut rows: Vec<J>, limit: usize, key: &str) -> J {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r[key].clone())
    } else {
        None
    };
    json!({"rows": rows, "next": next})
}

async fn list_shared(
    State(s): State<AppState>,
    Path(resource): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<J>> {
    list(&s, &resource, q, false).await
}

async fn list_owned(
    State(s): State<AppState>,
    Path(resource): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<J>> {
    list(&s, &resource, q, true).await
}

async fn get_row(s: &AppState, resource: &str, uuid: &str) -> ApiResult<Json<J>> {
    let uuid = parse_uuid(uuid)?;
    match s.store.get_row(resource, uuid).await? {
        Some(r) => Ok(Json(r)),
        None => Err(StoreError::NotFound {
            resource: resource.to_owned(),
            uuid,
        }
        .into()),
    }
}

async fn get_shared(
    State(s): State<AppState>,
    Path((resource, uuid)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    get_row(&s, &resource, &uuid).await
}

async fn get_owned(
    State(s): State<AppState>,
    Path((resource, uuid)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    get_row(&s, &resource, &uuid).await
}

async fn write_owned(
    State(s): State<AppState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let rows = crate::guard::parse_array(&body, s.max_rows)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| object(r, &format!("row {i}")))
        .collect::<ApiResult<Vec<_>>>()?;
    let count = s.store.write_owned(&resource, rows).await?.uuids.len();
    Ok((StatusCode::CREATED, Json(json!({"count": count}))))
}

async fn delete_owned(
    State(s): State<AppState>,
    Path((resource, uuid)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    let uuid = parse_uuid(&uuid)?;
    s.store.delete_owned(&resource, uuid).await?;
    Ok(Json(json!({"uuid": uuid, "deleted": true})))
}

/// One entry of `POST /v1/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    op: String,
    resource: String,
    uuid: Option<String>,
    fields: Option<serde_json::Map<String, J>>,
}

async fn batch(State(s): State<AppState>, body: Bytes) -> ApiResult<Json<J>> {
    let items = crate::guard::parse_array(&body, s.max_rows)?;
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let bad = |m: String| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("entry {i} of the batch: {m}"),
            )
        };
        let it: BatchItem = serde_json::from_value(item).map_err(|e| bad(e.to_string()))?;
        not_system(&it.resource)?;
        let uuid = it
            .uuid
            .as_deref()
            .map(parse_uuid)
            .transpose()
            .map_err(|e| bad(e.message))?;
        let need_uuid = || uuid.ok_or_else(|| bad(format!("`{}` needs a uuid", it.op)));
        entries.push(match it.op.as_str() {
            "create" => BatchEntry::Create {
                resource: it.resource,
                uuid,
                fields: it.fields.unwrap_or_default(),
            },
            "update" => BatchEntry::Update {
                resource: it.resource.clone(),
                uuid: need_uuid()?,
                fields: it.fields.unwrap_or_default(),
            },
            "delete" => BatchEntry::Delete {
                resource: it.resource.clone(),
                uuid: need_uuid()?,
            },
            other => {
                return Err(bad(format!(
                    "unknown op `{other}`: use create, update or delete"
                )));
            }
        });
    }
    if entries.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the batch is empty"));
    }
    let out = s.store.batch(entries).await?;
    Ok(Json(json!({"uuids": out.uuids})))
}

/// Paging of `/v1/files`.
#[derive(Debug, Deserialize)]
struct FilesQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn files(State(s): State<AppState>, Query(q): Query<FilesQuery>) -> ApiResult<Json<J>> {
    let limit = page_limit(q.limit);
    let rows = s.store.files(q.after.as_deref(), limit + 1).await?;
    Ok(Json(page(rows, limit, "cas_id")))
}

/// `/v1/digest`'s forms: the whole library, one resource, or one key range of it.
#[derive(Debug, Deserialize)]
struct DigestQuery {
    resource: Option<String>,
    prefix: Option<String>,
}

fn fingerprint_json(f: &murmur_store::digest::Fingerprint) -> J {
    json!({"hash": hex::encode(f.hash.0), "entries": f.entries, "live": f.live})
}

async fn digest(State(s): State<AppState>, Query(q): Query<DigestQuery>) -> ApiResult<Json<J>> {
    use murmur_store::digest::Ranges;
    let Some(resource) = q.resource else {
        if q.prefix.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "`prefix` needs a `resource`",
            ));
        }
        let d = s.store.digest().await?;
        let resources: serde_json::Map<String, J> = s
            .store
            .resource_fingerprints()
            .await?
            .iter()
            .map(|(name, f)| (name.clone(), fingerprint_json(f)))
            .collect();
        return Ok(Json(
            json!({"digest": d.digest, "rows": d.rows, "resources": resources}),
        ));
    };
    let prefix = q.prefix.unwrap_or_default();
    let fingerprint = s.store.range_fingerprint(&resource, &prefix).await?;
    let mut out = json!({
        "resource": resource,
        "prefix": prefix,
        "fingerprint": fingerprint_json(&fingerprint),
    });
    match s.store.range(&resource, &prefix).await? {
        Ranges::Ranges(rs) => {
            out["ranges"] = rs
                .iter()
                .map(|r| json!({"prefix": r.prefix, "fingerprint": fingerprint_json(&r.fingerprint)}))
                .collect();
        }
        Ranges::Rows(rows) => {
            out["rows"] = rows
                .iter()
                .map(|r| json!({"uuid": r.uuid, "hash": hex::encode(r.hash.0)}))
                .collect();
        }
    }
    Ok(Json(out))
}

/// `/v1/diff?peer=`: a connected peer, by peer id or client UUID.
#[derive(Debug, Deserialize)]
struct DiffQuery {
    peer: String,
}

async fn diff(State(s): State<AppState>, Query(q): Query<DiffQuery>) -> ApiResult<Json<J>> {
    let peers = s.status.peers.snapshot();
    let found = peers.iter().find(|p| {
        p.peer_id.to_string() == q.peer || p.client_uuid.is_some_and(|c| c.to_string() == q.peer)
    });
    let Some(peer) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "`{}` is no connected peer (a peer id or client UUID from `murmur peers`)",
                q.peer
            ),
        ));
    };
    let d = crate::sync::repair::find_differences(&s.store, &s.status.net, peer.peer_id)
        .await
        .map_err(|e| match e {
            crate::sync::PullError::Store(e) => ApiError::from(e),
            e => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("asking the peer failed: {e}"),
            ),
        })?;
    Ok(Json(json!({
        "peer": peer.peer_id.to_string(),
        "client_uuid": peer.client_uuid,
        "requests": d.requests,
        "truncated": d.truncated,
        "rows": d.rows,
    })))
}

async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(s.events.subscribe()).map(|e| {
        Ok(match e {
            Ok(ev) => SseEvent::default()
                .event("change")
                .json_data(&ev)
                .unwrap_or_default(),
            // A slow subscriber missed events: tell it, so it can re-read.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    if let Ok(n) = s.store.pending_operations().await {
        s.metrics.pending_operations.set(n as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
