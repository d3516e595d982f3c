//! Shared pieces of the fuzz targets: a store per process (in a temp dir, reused across
//! iterations and replaced every so often so it stays small), a current-thread runtime, and
//! a structured generator of ops and changes that stays close enough to valid input to reach
//! the merge and SQL code.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use libp2p_identity::ed25519;
use murmur_store::validate::MAX_SEQ;
use murmur_store::{
    Change, ColumnType, Durability, Method, Op, OwnedRow, Store, StoreOptions, Value,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// An author ops claim that no key signs (the store's own author is a new one per open).
pub const ME: Uuid = Uuid::from_u128(0x1111);

/// The fuzz store's device key (fixed, so runs are repeatable).
pub fn device_key() -> ed25519::Keypair {
    let secret = ed25519::SecretKey::try_from_bytes([0x6d; 32]).expect("32 bytes");
    ed25519::Keypair::from(secret)
}
/// Other clients that ops claim as authors.
pub const AUTHORS: [Uuid; 3] = [
    Uuid::from_u128(0x2222),
    Uuid::from_u128(0x3333),
    Uuid::from_u128(0x4444),
];

/// A runtime and a store, reused across iterations.
pub struct Fixture {
    /// Current-thread runtime that drives the store.
    pub rt: Runtime,
    /// The store.
    pub store: Store,
    _dir: TempDir,
    uses: u32,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

impl Fixture {
    fn new(populate: bool) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut o = StoreOptions::new(dir.path().join("fuzz.db"), device_key());
        o.durability = Durability::Normal;
        o.max_drift = Duration::from_millis(100);
        let store = rt.block_on(Store::open(o)).expect("open store");
        if populate {
            rt.block_on(populate_store(&store));
        }
        Fixture {
            rt,
            store,
            _dir: dir,
            uses: 0,
        }
    }
}

/// Runs `f` with the process's fixture, replaced by a fresh one every `recycle` uses.
pub fn with_fixture<R>(recycle: u32, populate: bool, f: impl FnOnce(&Fixture) -> R) -> R {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|fx| fx.uses >= recycle) {
        if let Some(old) = guard.take() {
            old.rt.block_on(old.store.close());
        }
        *guard = Some(Fixture::new(populate));
    }
    let fx = guard.as_mut().expect("fixture set above");
    fx.uses += 1;
    f(fx)
}

/// A few shared rows, an update, a delete and an owned batch, so reads have data to page.
async fn populate_store(store: &Store) {
    let tag = |n: &str| {
        serde_json::json!({"name": n, "color": "red"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    for i in 0..20 {
        let out = store
            .create_shared("tags", None, tag(&format!("t{i}")))
            .await
            .expect("create");
        if i % 3 == 0 {
            store
                .update_shared("tags", out.uuids[0], tag("renamed"))
                .await
                .expect("update");
        }
        if i % 5 == 0 {
            store
                .delete_shared("tags", out.uuids[0])
                .await
                .expect("delete");
        }
    }
    let rows: Vec<_> = (0..30)
        .map(|i| {
            serde_json::json!({"materialized_path": "/a", "name": format!("f{i}"), "size_bytes": i})
                .as_object()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let out = store.write_owned("file_paths", rows).await.expect("owned");
    store
        .delete_owned("file_paths", out.uuids[0])
        .await
        .expect("delete owned");
}

const RESOURCES: [&str; 9] = [
    "tags",
    "albums",
    "comments",
    "jobs",
    "tags_on_files",
    "file_paths",
    "media_data",
    "nope",
    "",
];
const PROPS: [&str; 12] = [
    "name",
    "color",
    "is_hidden",
    "content",
    "cas_id",
    "tag_uuid",
    "materialized_path",
    "size_bytes",
    "width",
    "file_path_uuid",
    "uuid",
    "evil",
];

/// A value of any kind, edge cases included.
pub fn value(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::Null,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::Int(u.int_in_range(0..=1)?),
        3 => Value::Real(u.arbitrary()?),
        4 => Value::Real(f64::NAN),
        5 => Value::Text(u.arbitrary()?),
        6 => Value::Text(Uuid::from_u128(u.int_in_range(0..=8)?).to_string()),
        _ => Value::Text(String::new()),
    })
}

/// A value that is usually of the column's type.
pub fn typed_value(u: &mut Unstructured, ty: ColumnType) -> Result<Value> {
    if u.ratio(1, 8)? {
        return value(u);
    }
    Ok(match ty {
        ColumnType::Text => Value::Text(u.arbitrary()?),
        ColumnType::Integer => Value::Int(u.arbitrary()?),
        ColumnType::Real => Value::Real(u.arbitrary()?),
        ColumnType::Bool => Value::Int(u.int_in_range(0..=1)?),
        ColumnType::Uuid => Value::Text(Uuid::from_u128(u.arbitrary()?).to_string()),
    })
}

/// A row uuid from a small set, so ops collide on rows.
pub fn row(u: &mut Unstructured) -> Result<Uuid> {
    Ok(Uuid::from_u128(0xA000 + u.int_in_range(0..=7)? as u128))
}

/// An author: one of a few, sometimes the store's own, sometimes nil.
pub fn author(u: &mut Unstructured) -> Result<Uuid> {
    Ok(match u.int_in_range(0..=9)? {
        0 => ME,
        1 => Uuid::nil(),
        n => AUTHORS[(n as usize) % AUTHORS.len()],
    })
}

/// A timestamp: mostly in the past (distinct per op), sometimes 0, far ahead, or the max.
pub fn time(u: &mut Unstructured, now: u64, index: u64) -> Result<u64> {
    Ok(match u.int_in_range(0..=9u64)? {
        0 => 0,
        1 => u64::MAX,
        2 => now.saturating_add(1 << 40),
        n => now
            .saturating_sub(1 << 36)
            .saturating_add(index * 1024 + n),
    })
}

/// A sequence number: small (so they collide and leave gaps), or an edge case.
pub fn seq(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=11)? {
        0 => 0,
        1 => u64::MAX,
        2 => MAX_SEQ,
        3 => MAX_SEQ + 1,
        _ => u.int_in_range(1..=12)?,
    })
}

/// An op, valid or nearly so.
pub fn op(u: &mut Unstructured, now: u64, index: u64) -> Result<Op> {
    let method = *u.choose(&[
        Method::SharedCreate,
        Method::SharedUpdate,
        Method::SharedDelete,
        Method::OwnedBatchCreate,
        Method::OwnedDelete,
    ])?;
    let mut fields = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = *u.choose(&PROPS)?;
        let v = match name {
            "is_hidden" => typed_value(u, ColumnType::Bool)?,
            "size_bytes" | "width" => typed_value(u, ColumnType::Integer)?,
            "tag_uuid" | "file_path_uuid" => typed_value(u, ColumnType::Uuid)?,
            _ => typed_value(u, ColumnType::Text)?,
        };
        fields.insert(name.to_owned(), v);
    }
    Ok(Op {
        author: author(u)?,
        seq: seq(u)?,
        time: time(u, now, index)?,
        method,
        resource: (*u.choose(&RESOURCES)?).to_owned(),
        uuid: if u.ratio(9, 10)? { Some(row(u)?) } else { None },
        property: if u.arbitrary()? {
            Some((*u.choose(&PROPS)?).to_owned())
        } else {
            None
        },
        value: if u.arbitrary()? {
            Some(value(u)?)
        } else {
            None
        },
        fields,
        count: if u.arbitrary()? {
            Some(u.arbitrary()?)
        } else {
            None
        },
        groups: {
            let mut groups = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                groups.push(murmur_store::op::RowGroup {
                    rows: u.int_in_range(0..=300)?,
                    hash: murmur_store::hash::Hash(u.arbitrary()?),
                });
            }
            groups
        },
    })
}

/// A change: a whole op, or a page of owned rows under a batch header.
pub fn change(u: &mut Unstructured, now: u64, index: u64) -> Result<Change> {
    let op = op(u, now, index)?;
    if u.ratio(1, 3)? {
        let registry = murmur_store::Registry::default_library();
        let columns: Vec<ColumnType> = registry
            .get(&op.resource)
            .map(|d| d.columns.iter().map(|c| c.ty).collect())
            .unwrap_or_default();
        let mut rows = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let mut values = Vec::new();
            if u.ratio(4, 5)? {
                for ty in &columns {
                    values.push(typed_value(u, *ty)?);
                }
            } else {
                for _ in 0..u.int_in_range(0..=8)? {
                    values.push(value(u)?);
                }
            }
            rows.push(OwnedRow {
                uuid: row(u)?,
                values,
            });
        }
        Ok(Change::OwnedRows {
            header: op,
            rows,
            last: u.arbitrary()?,
            first_group: u.int_in_range(0..=3)?,
        })
    } else {
        Ok(Change::Op(op))
    }
}
