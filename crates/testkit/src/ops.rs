//! Builders of what is written and synced: JSON fields, ops valid apart from what a test
//! changes, and changes.

use murmur_store::{Change, Method, Op, Value};
use serde_json::{Map, Value as J, json};
use uuid::Uuid;

/// The fields of a JSON object (panics on anything else).
pub fn fields(v: J) -> Map<String, J> {
    match v {
        J::Object(m) => m,
        _ => panic!("fields must be an object"),
    }
}

/// The fields of a red tag named `name`.
pub fn tag(name: &str) -> Map<String, J> {
    fields(json!({"name": name, "color": "red"}))
}

/// Each op as a change.
pub fn changes(ops: &[Op]) -> Vec<Change> {
    ops.iter().cloned().map(Change::Op).collect()
}

/// An op of `author` on a new row, valid apart from what the caller changes.
pub fn op(author: Uuid, seq: u64, time: u64, resource: &str, method: Method) -> Op {
    Op {
        author,
        seq,
        time,
        method,
        resource: resource.to_owned(),
        uuid: Some(Uuid::now_v7()),
        property: None,
        value: None,
        fields: Default::default(),
        count: None,
        groups: Vec::new(),
    }
}

/// The `SharedCreate` of a tag named `name` by `author`.
pub fn create_tag(author: Uuid, seq: u64, time: u64, name: &str) -> Op {
    let mut o = op(author, seq, time, "tags", Method::SharedCreate);
    o.fields.insert("name".into(), Value::Text(name.into()));
    o
}
