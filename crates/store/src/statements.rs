//! murmur's own SQL, for benchmarks whose plain-SQL baselines must run exactly what the
//! engine runs: built by the engine's builders, so a change to the row clock or to a
//! statement changes the baseline with it. Not an API for applications.

use crate::clock::Hlc;
use crate::registry::ResourceDef;

/// The in-place merge of one `SharedUpdate` of column `column` of `def` into each of `rows`
/// rows, bound as `(uuid, value, timestamp)` per row: the statement remote batches run.
/// `unchecked` is the upsert form of a table with its unborn index ([`unborn_index`]).
pub fn shared_update(def: &ResourceDef, column: usize, rows: usize, unchecked: bool) -> String {
    crate::engine::update_statement(def, column, rows, unchecked)
}

/// The `CREATE INDEX` of the partial index of rows an unchecked update inserted, and the
/// query that asks whether it holds any (what the engine runs after such updates).
pub fn unborn_index(def: &ResourceDef) -> (String, String) {
    (
        crate::engine::create_unborn_index(&def.name),
        crate::engine::any_unborn_statement(&def.name),
    )
}

/// The clock of a row of `def` as a create made it (every register at `created`): the
/// compact form the engine stores.
pub fn created_clock(def: &ResourceDef, created: Hlc) -> Vec<u8> {
    let names = def.columns.iter().map(|c| c.name.as_str());
    let layout = crate::rowclock::layout(names);
    crate::rowclock::encode(created, &layout, def.columns.iter().map(|_| Some(created)))
}
