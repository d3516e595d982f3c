//! Values of resource columns, as they cross the API (JSON), the wire (CBOR) and SQLite.

use std::fmt;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::StoreError;

/// The most bytes one row's values may take (the sum of [`Value::wire_size`] over its
/// columns): a local write that makes a row larger is refused ([`StoreError::TooLarge`], a
/// 413 on the API). With it, one row always fits in one sync page under the 16 MiB frame
/// cap with room to spare: a page is cut at [`crate::MAX_PAGE_BYTES`] but always holds at
/// least one item, so a single row of up to this size, or a shared row that concurrent
/// writes to several of its columns on several devices made up to a few times larger,
/// still travels.
pub const MAX_ROW_BYTES: usize = 4 * 1024 * 1024;

/// The type of a resource column. It decides what JSON a write may carry and how the value
/// is stored in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// A 64-bit signed integer.
    Integer,
    /// A finite 64-bit float.
    Real,
    /// `true`/`false` on the API, 0/1 in SQLite.
    Bool,
    /// A UUID in its hyphenated text form.
    Uuid,
}

impl ColumnType {
    /// The name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Bool => "bool",
            ColumnType::Uuid => "uuid",
        }
    }
}

/// One column value. On the wire it is untagged CBOR (null, integer, float or text); in
/// SQLite it is the matching storage class. Booleans are stored as integers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL NULL / JSON null.
    Null,
    /// An integer (also booleans, as 0/1).
    Int(i64),
    /// A finite float.
    Real(f64),
    /// Text (also UUIDs).
    Text(String),
}

impl Value {
    /// Converts an API value to a column value, checking it against the column's type.
    pub fn from_json(
        resource: &str,
        column: &str,
        ty: ColumnType,
        json: &serde_json::Value,
    ) -> Result<Value, StoreError> {
        use serde_json::Value as J;
        let wrong = || StoreError::WrongType {
            resource: resource.to_owned(),
            field: column.to_owned(),
            expected: ty.name(),
        };
        Ok(match (ty, json) {
            (_, J::Null) => Value::Null,
            (ColumnType::Text, J::String(s)) => Value::Text(s.clone()),
            (ColumnType::Uuid, J::String(s)) => {
                let uuid = uuid::Uuid::parse_str(s).map_err(|_| wrong())?;
                Value::Text(uuid.hyphenated().to_string())
            }
            (ColumnType::Integer, J::Number(n)) => Value::Int(n.as_i64().ok_or_else(wrong)?),
            (ColumnType::Real, J::Number(n)) => {
                let f = n.as_f64().ok_or_else(wrong)?;
                if !f.is_finite() {
                    return Err(wrong());
                }
                Value::Real(f)
            }
            (ColumnType::Bool, J::Bool(b)) => Value::Int(i64::from(*b)),
            _ => return Err(wrong()),
        })
    }

    /// Converts a stored value back to JSON for the API.
    pub fn to_json(&self, ty: ColumnType) -> serde_json::Value {
        use serde_json::Value as J;
        match (self, ty) {
            (Value::Null, _) => J::Null,
            (Value::Int(i), ColumnType::Bool) => J::Bool(*i != 0),
            (Value::Int(i), _) => J::from(*i),
            (Value::Real(f), _) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            (Value::Text(s), _) => J::String(s.clone()),
        }
    }

    /// Checks a value that arrived from the network against the column's type.
    pub fn check_type(&self, ty: ColumnType) -> bool {
        match (self, ty) {
            (Value::Null, _) => true,
            (Value::Int(_), ColumnType::Integer) => true,
            (Value::Int(i), ColumnType::Bool) => *i == 0 || *i == 1,
            (Value::Real(f), ColumnType::Real) => f.is_finite(),
            (Value::Text(_), ColumnType::Text) => true,
            (Value::Text(s), ColumnType::Uuid) => uuid::Uuid::parse_str(s).is_ok(),
            _ => false,
        }
    }

    /// The value as text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// An upper bound of the value's encoded size on the wire (CBOR: a header of at most 9
    /// bytes, then the text). Pages are cut by these estimates.
    pub fn wire_size(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Int(_) | Value::Real(_) => 9,
            Value::Text(s) => 9 + s.len(),
        }
    }

    /// Feeds the value into a digest, with a tag per kind so that 1 and "1" differ.
    pub(crate) fn hash_into(&self, h: &mut blake3::Hasher) {
        match self {
            Value::Null => {
                h.update(&[0]);
            }
            Value::Int(i) => {
                h.update(&[1]);
                h.update(&i.to_be_bytes());
            }
            Value::Real(f) => {
                h.update(&[2]);
                h.update(&f.to_bits().to_be_bytes());
            }
            Value::Text(s) => {
                h.update(&[3]);
                h.update(&(s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
}

/// Decodes the untagged form by the kind of the incoming value, in one pass (serde's
/// `untagged` would buffer the value and try each variant, formatting an error per miss: a
/// tenth of a catch-up's CPU went there).
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, an integer, a float or text")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v)
                    .map(Value::Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Real(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Text(v))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

impl sqlx::Type<sqlx::Sqlite> for Value {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
    fn compatible(_ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        true
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for Value {
    /// Moves a text value into the statement's arguments instead of copying it.
    fn encode(
        self,
        buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            Value::Text(s) => <String as sqlx::Encode<sqlx::Sqlite>>::encode(s, buf),
            other => other.encode_by_ref(buf),
        }
    }

    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            Value::Null => Ok(sqlx::encode::IsNull::Yes),
            Value::Int(i) => <i64 as sqlx::Encode<sqlx::Sqlite>>::encode_by_ref(i, buf),
            Value::Real(f) => <f64 as sqlx::Encode<sqlx::Sqlite>>::encode_by_ref(f, buf),
            Value::Text(s) => <String as sqlx::Encode<sqlx::Sqlite>>::encode_by_ref(s, buf),
        }
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for Value {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        use sqlx::{TypeInfo, ValueRef};
        if value.is_null() {
            return Ok(Value::Null);
        }
        let info = value.type_info();
        match info.name() {
            "INTEGER" | "BOOLEAN" => Ok(Value::Int(<i64 as sqlx::Decode<sqlx::Sqlite>>::decode(
                value,
            )?)),
            "REAL" => Ok(Value::Real(<f64 as sqlx::Decode<sqlx::Sqlite>>::decode(
                value,
            )?)),
            "TEXT" => Ok(Value::Text(<String as sqlx::Decode<sqlx::Sqlite>>::decode(
                value,
            )?)),
            other => Err(format!("unsupported stored value type {other}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_round_trip_keeps_kinds() {
        for v in [
            Value::Null,
            Value::Int(-5),
            Value::Real(1.5),
            Value::Text("1".into()),
        ] {
            let mut buf = Vec::new();
            ciborium::into_writer(&v, &mut buf).unwrap();
            let back: Value = ciborium::from_reader(buf.as_slice()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn other_cbor_kinds_are_errors() {
        let refuse = |v: &dyn erased::Ser| {
            let mut buf = Vec::new();
            v.write(&mut buf);
            ciborium::from_reader::<Value, _>(buf.as_slice()).is_err()
        };
        assert!(refuse(&true));
        assert!(refuse(&u64::MAX));
        assert!(refuse(&vec![1u8, 2]));
        assert!(refuse(&serde_bytes::ByteBuf::from(vec![1u8])));
        assert!(refuse(&std::collections::BTreeMap::from([(1, 2)])));
    }

    mod erased {
        pub trait Ser {
            fn write(&self, buf: &mut Vec<u8>);
        }
        impl<T: serde::Serialize> Ser for T {
            fn write(&self, buf: &mut Vec<u8>) {
                ciborium::into_writer(self, buf).unwrap();
            }
        }
    }

    #[test]
    fn json_types_are_checked() {
        let j = serde_json::json!("x");
        assert!(Value::from_json("tags", "n", ColumnType::Integer, &j).is_err());
        assert!(Value::from_json("tags", "n", ColumnType::Uuid, &j).is_err());
        let b = Value::from_json("a", "h", ColumnType::Bool, &serde_json::json!(true)).unwrap();
        assert_eq!(b, Value::Int(1));
        assert_eq!(b.to_json(ColumnType::Bool), serde_json::json!(true));
    }
}
