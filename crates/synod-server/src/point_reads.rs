//! Point reads, batched. A single-key read is a few B-tree page lookups, less work
//! than the two thread switches of handing it to the blocking pool; but it must not
//! run on an async worker, since a store read can wait on a durable commit that
//! holds the pages it needs, stalling every task on that worker meanwhile (heartbeats
//! and lease renewals among them). So the point reads that arrive while a batch is
//! being served wait and go to the blocking pool together, read from one snapshot.
//!
//! One snapshot serves every read in a batch: each read was linearized before it
//! joined (its read barrier had passed), and the snapshot is opened after all of
//! them joined, so it holds every write each of them must see.

use std::sync::Arc;

use synod_proto::etcdserverpb::{RangeRequest, RangeResponse};
use synod_storage::mvcc::{MvccError, MvccReader};
use synod_storage::StoreError;

use crate::batch::{Batcher, Limit};
use crate::limits::{POINT_READS_PER_BATCH_MAX, POINT_READ_BATCHES_IN_FLIGHT};

/// Point reads of one store, batched.
pub type PointReads = Batcher<RangeRequest, Result<RangeResponse, MvccError>>;

/// Batched point reads of `reader`.
pub fn point_reads(reader: MvccReader) -> Arc<PointReads> {
    let limit = Limit {
        in_flight: POINT_READ_BATCHES_IN_FLIGHT,
        items: POINT_READS_PER_BATCH_MAX,
        weight: |_| 0,
        weight_max: usize::MAX,
    };
    Batcher::new(limit, move |requests: Vec<RangeRequest>| {
        let reader = reader.clone();
        async move {
            let count = requests.len();
            let outcome = tokio::task::spawn_blocking(move || reader.ranges(&requests)).await;
            let failure = match outcome {
                Ok(Ok(responses)) => return responses,
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            };
            (0..count)
                .map(|_| Err(MvccError::Store(StoreError::Task(failure.clone()))))
                .collect()
        }
    })
}
