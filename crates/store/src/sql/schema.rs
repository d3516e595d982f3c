//! The registry checked against the tables: every resource has its table, its columns and
//! the merge state's columns, declared with affinities that keep values as written.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::error::StoreError;
use crate::registry::{Kind, Registry};
use crate::value::ColumnType;

/// Fails with [`StoreError::Schema`] naming the first table or column that does not fit.
pub(crate) async fn check_schema(pool: &SqlitePool, registry: &Registry) -> Result<(), StoreError> {
    for def in registry.iter() {
        let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?)")
            .bind(def.name.clone())
            .fetch_all(pool)
            .await?;
        let have: std::collections::HashMap<String, String> = rows
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
            .collect();
        if have.is_empty() {
            return Err(StoreError::Schema(format!(
                "resource `{}` has no table",
                def.name
            )));
        }
        let mut need: Vec<&str> = vec!["uuid"];
        match def.kind {
            Kind::Owned => need.extend(["owner", "crdt_ts", "crdt_seq"]),
            Kind::Shared => need.push("crdt_clock"),
        }
        if let Some(c) = def
            .columns
            .iter()
            .find(|c| c.name.len() > u16::MAX as usize)
        {
            return Err(StoreError::Schema(format!(
                "column name `{}` of `{}` is too long",
                c.name, def.name
            )));
        }
        need.extend(def.columns.iter().map(|c| c.name.as_str()));
        for n in need {
            if !have.contains_key(n) {
                return Err(StoreError::Schema(format!(
                    "table `{}` has no column `{n}`",
                    def.name
                )));
            }
        }
        // The data columns hold the registers' values: SQLite must store them as written.
        for c in &def.columns {
            let declared = have.get(&c.name).map(String::as_str).unwrap_or_default();
            if !keeps_values(declared, c.ty) {
                return Err(StoreError::Schema(format!(
                    "column `{}` of `{}` is declared `{declared}`, whose affinity would convert \
                     {} values; declare it {}",
                    c.name,
                    def.name,
                    c.ty.name(),
                    match c.ty {
                        ColumnType::Text | ColumnType::Uuid => "TEXT (or BLOB)",
                        ColumnType::Integer | ColumnType::Bool => "INTEGER (or BLOB)",
                        ColumnType::Real => "REAL (or BLOB)",
                    }
                )));
            }
        }
    }
    Ok(())
}

/// Whether a column declared `declared` stores values of type `ty` exactly as written, by
/// SQLite's affinity rules (<https://sqlite.org/datatype3.html#determination_of_column_affinity>).
/// A text value in an INTEGER column, or 1.0 in a NUMERIC one, would come back converted.
fn keeps_values(declared: &str, ty: ColumnType) -> bool {
    let d = declared.to_ascii_uppercase();
    #[derive(PartialEq)]
    enum Affinity {
        Integer,
        Text,
        Blob,
        Real,
        Numeric,
    }
    let affinity = if d.contains("INT") {
        Affinity::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Affinity::Text
    } else if d.contains("BLOB") || d.is_empty() {
        Affinity::Blob
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    };
    match ty {
        ColumnType::Text | ColumnType::Uuid => {
            matches!(affinity, Affinity::Text | Affinity::Blob)
        }
        ColumnType::Integer | ColumnType::Bool => {
            matches!(
                affinity,
                Affinity::Integer | Affinity::Numeric | Affinity::Blob
            )
        }
        ColumnType::Real => matches!(affinity, Affinity::Real | Affinity::Blob),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_affinities_that_keep_values_pass() {
        use ColumnType::*;
        for (declared, ty, ok) in [
            ("TEXT", Text, true),
            ("varchar(20)", Uuid, true),
            ("", Text, true),
            ("BLOB", Real, true),
            ("INTEGER", Integer, true),
            ("BOOLEAN", Bool, true),
            ("INTEGER", Text, false),
            ("NUMERIC", Real, false),
            ("DECIMAL", Text, false),
            ("REAL", Integer, false),
            ("DOUBLE", Real, true),
            ("TEXT", Real, false),
        ] {
            assert_eq!(keeps_values(declared, ty), ok, "{declared} for {ty:?}");
        }
    }
}
