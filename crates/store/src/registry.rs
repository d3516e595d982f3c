//! The resource registry: which tables sync, whether they are shared or owned, and their
//! columns. Writes, apply, reads, snapshots and the digest are all driven by it, so adding a
//! resource takes a migration and one [`ResourceDef`], and no new apply code.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::StoreError;
use crate::value::ColumnType;

/// Who may change a resource's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any member may create, update and delete rows; properties merge last-writer-wins.
    Shared,
    /// Only the client that created a row may change it; rows travel in batches.
    Owned,
}

/// One column of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name, as in the table and the API.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
}

/// A synced resource: a table of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// Table name, also the API's `{resource}`.
    pub name: String,
    /// Shared or owned.
    pub kind: Kind,
    /// The data columns (not `uuid`, nor the owned tables' `owner`, `crdt_ts`, `crdt_seq`).
    pub columns: Vec<ColumnDef>,
    /// When set, a new row's UUID is a UUIDv5 of these columns' values, so two devices that
    /// create the same relation make one row (e.g. `tags_on_files` from tag and file).
    pub uuid_from: Option<Vec<String>>,
}

impl ResourceDef {
    /// A resource with the given columns.
    pub fn new(name: &str, kind: Kind, columns: &[(&str, ColumnType)]) -> Self {
        ResourceDef {
            name: name.to_owned(),
            kind,
            columns: columns
                .iter()
                .map(|(n, ty)| ColumnDef {
                    name: (*n).to_owned(),
                    ty: *ty,
                })
                .collect(),
            uuid_from: None,
        }
    }

    /// Derive new rows' UUIDs from these columns.
    pub fn with_uuid_from(mut self, columns: &[&str]) -> Self {
        self.uuid_from = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// The column of that name.
    pub fn column(&self, name: &str) -> Result<&ColumnDef, StoreError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| StoreError::UnknownField {
                resource: self.name.clone(),
                field: name.to_owned(),
            })
    }

    /// Index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// The set of synced resources, in a fixed order (the digest and snapshots follow it).
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Arc<BTreeMap<String, ResourceDef>>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry {
            resources: Arc::new(BTreeMap::new()),
        }
    }

    /// The default library: tags, albums, comments, jobs, tags_on_files (shared)
    /// and file_paths, media_data (owned).
    pub fn default_library() -> Self {
        use ColumnType::*;
        use Kind::*;
        let mut r = Registry::empty();
        for def in [
            ResourceDef::new("tags", Shared, &[("name", Text), ("color", Text)]),
            ResourceDef::new("albums", Shared, &[("name", Text), ("is_hidden", Bool)]),
            ResourceDef::new("comments", Shared, &[("content", Text), ("cas_id", Text)]),
            ResourceDef::new("jobs", Shared, &[("name", Text), ("status", Text)]),
            ResourceDef::new(
                "tags_on_files",
                Shared,
                &[("tag_uuid", Uuid), ("cas_id", Text)],
            )
            .with_uuid_from(&["tag_uuid", "cas_id"]),
            ResourceDef::new(
                "file_paths",
                Owned,
                &[
                    ("materialized_path", Text),
                    ("name", Text),
                    ("extension", Text),
                    ("size_bytes", Integer),
                    ("cas_id", Text),
                    ("date_modified", Text),
                ],
            ),
            ResourceDef::new(
                "media_data",
                Owned,
                &[
                    ("file_path_uuid", Uuid),
                    ("width", Integer),
                    ("height", Integer),
                    ("duration_ms", Integer),
                ],
            ),
        ] {
            r.register(def);
        }
        r
    }

    /// Adds (or replaces) a resource. Its table must exist (a migration); [`crate::Store::open`]
    /// checks that it does.
    pub fn register(&mut self, def: ResourceDef) {
        Arc::make_mut(&mut self.resources).insert(def.name.clone(), def);
    }

    /// The resource of that name.
    pub fn get(&self, name: &str) -> Result<&ResourceDef, StoreError> {
        self.resources
            .get(name)
            .ok_or_else(|| StoreError::UnknownResource(name.to_owned()))
    }

    /// All resources, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &ResourceDef> {
        self.resources.values()
    }

    /// The resource following `name` in order, or the first one for `None`.
    pub(crate) fn next_after(&self, name: Option<&str>) -> Option<&ResourceDef> {
        match name {
            None => self.resources.values().next(),
            Some(n) => self
                .resources
                .range::<str, _>((std::ops::Bound::Excluded(n), std::ops::Bound::Unbounded))
                .next()
                .map(|(_, d)| d),
        }
    }
}

/// A registry as peers announce it: how many resources and columns it has, and a stable
/// hash of them (names, kinds, column names and types), so that a node can tell a peer
/// that runs another schema, and which of the two knows more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaVersion {
    /// Resources plus their columns: a schema that adds resources or columns has more.
    pub items: u32,
    /// blake3 of the registry's description.
    pub hash: crate::hash::Hash,
}

/// How a peer's schema compares with this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaRelation {
    /// The same registry.
    Same,
    /// More resources or columns: what it writes to them waits here (quarantined).
    Newer,
    /// Fewer: it keeps what this node writes to them waiting.
    Older,
    /// As many, but others.
    Other,
}

impl SchemaVersion {
    /// How `theirs` compares with `self`.
    pub fn relation(&self, theirs: &SchemaVersion) -> SchemaRelation {
        use std::cmp::Ordering::*;
        if self == theirs {
            return SchemaRelation::Same;
        }
        match theirs.items.cmp(&self.items) {
            Greater => SchemaRelation::Newer,
            Less => SchemaRelation::Older,
            Equal => SchemaRelation::Other,
        }
    }
}

impl Registry {
    /// This registry's [`SchemaVersion`].
    pub fn schema_version(&self) -> SchemaVersion {
        let mut h = blake3::Hasher::new();
        h.update(b"murmur schema v1\0");
        let mut items = 0u32;
        for def in self.iter() {
            items = items.saturating_add(1);
            let kind: &[u8] = match def.kind {
                Kind::Shared => b"shared",
                Kind::Owned => b"owned",
            };
            for part in [def.name.as_bytes(), kind] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part);
            }
            for c in &def.columns {
                items = items.saturating_add(1);
                for part in [c.name.as_bytes(), c.ty.name().as_bytes()] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part);
                }
            }
        }
        SchemaVersion {
            items,
            hash: crate::hash::Hash(*h.finalize().as_bytes()),
        }
    }

    /// A copy without `resource` (tests: a build that does not know it).
    pub fn without(&self, resource: &str) -> Registry {
        let mut r = self.clone();
        Arc::make_mut(&mut r.resources).remove(resource);
        r
    }

    /// A copy without the column `column` of `resource` (tests: a build that does not know
    /// it).
    pub fn without_column(&self, resource: &str, column: &str) -> Registry {
        let mut r = self.clone();
        if let Some(def) = Arc::make_mut(&mut r.resources).get_mut(resource) {
            def.columns.retain(|c| c.name != column);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_with_more_resources_or_columns_is_newer() {
        let full = Registry::default_library();
        let older = full.without("albums").without_column("tags", "color");
        let (f, o) = (full.schema_version(), older.schema_version());
        assert_eq!(f, Registry::default_library().schema_version());
        assert_eq!(o.relation(&f), SchemaRelation::Newer);
        assert_eq!(f.relation(&o), SchemaRelation::Older);
        assert_eq!(f.relation(&f), SchemaRelation::Same);
        // As many columns, but not the same ones.
        let a = full.without_column("tags", "color").schema_version();
        let b = full.without_column("jobs", "status").schema_version();
        assert_eq!(a.relation(&b), SchemaRelation::Other);
    }
}
