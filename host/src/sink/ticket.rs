//! What a write carries: its [`Ticket`] (route, dead letter or not, attempts) and the
//! [`SourceRecord`] it belongs to, whose count of outstanding writes finishes the record
//! at zero. Not the writing itself (the parent module) nor retries (`retry`).

use crate::plugin::RouteId;
use crate::source::tracker::{InFlight, PartitionHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A source record with several writes outstanding.
#[derive(Debug)]
pub struct Pending {
    record: InFlight,
    remaining: AtomicU32,
}

impl Pending {
    /// A source record with `writes` writes to wait for.
    pub fn new(handle: Arc<PartitionHandle>, offset: i64, writes: u32) -> Arc<Self> {
        Arc::new(Pending {
            record: InFlight { handle, offset },
            remaining: AtomicU32::new(writes),
        })
    }
}

/// The source record a write belongs to.
#[derive(Debug)]
pub enum SourceRecord {
    /// Its only write: the record is finished when this one is acknowledged (most records;
    /// no shared count to allocate and update).
    Only(InFlight),
    /// One of several writes: finished when the last is acknowledged.
    Shared(Arc<Pending>),
    /// A write of a wall-clock timer, which no source record waits for: it names the last
    /// record its task processed, for logs and revocation, and finishes nothing.
    Timer(InFlight),
    /// An output of a stateful batch: its source records finish only after the batch's
    /// changelog records, which are written once all its outputs are acknowledged.
    Gated(Arc<crate::changelog::Gated>),
}

impl SourceRecord {
    pub(super) fn record(&self) -> &InFlight {
        match self {
            SourceRecord::Only(record) | SourceRecord::Timer(record) => record,
            SourceRecord::Shared(pending) => &pending.record,
            SourceRecord::Gated(gated) => &gated.first,
        }
    }

    /// Counts one write acknowledged; the source record if that was its last.
    pub(super) fn acknowledge(&self) -> Option<&InFlight> {
        match self {
            SourceRecord::Only(record) => Some(record),
            SourceRecord::Timer(_) => None,
            SourceRecord::Gated(gated) => {
                gated.output_done();
                None
            }
            SourceRecord::Shared(pending) => {
                (pending.remaining.fetch_sub(1, Ordering::AcqRel) == 1).then_some(&pending.record)
            }
        }
    }
}

/// One write, on its way to the broker.
#[derive(Debug)]
pub struct Ticket {
    pub(super) source: SourceRecord,
    /// The route written to; `None` for a dead letter.
    pub(super) route: Option<RouteId>,
    pub(super) dead_letter: bool,
    pub(super) attempts: u32,
}

impl Ticket {
    /// A write for `source`, to `route` or (`None`) to the dead-letter topic.
    pub fn new(source: SourceRecord, route: Option<RouteId>) -> Box<Self> {
        Box::new(Ticket {
            source,
            route,
            dead_letter: route.is_none(),
            attempts: 0,
        })
    }
}
