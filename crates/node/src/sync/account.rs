//! What the node does with the report of an applied batch, from gossip or a pull: counts
//! it in the metrics and sends its row events to `/v1/events` subscribers.

use murmur_store::{ApplyReport, RowEvent};
use tokio::sync::broadcast;
use tracing::debug;

use crate::metrics::Metrics;

pub(super) fn account(
    metrics: &Metrics,
    row_events: &broadcast::Sender<RowEvent>,
    report: &ApplyReport,
    source: &str,
) {
    metrics.applied(source, report.applied);
    metrics.rows_applied.inc_by(report.rows as u64);
    metrics.ops_duplicate.inc_by(report.duplicates as u64);
    for (id, why) in &report.rejected {
        metrics.reject(why.label());
        debug!(op = %id, "rejected: {why}");
    }
    for e in &report.events {
        // No subscriber is fine.
        let _ = row_events.send(e.clone());
    }
}
