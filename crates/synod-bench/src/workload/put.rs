//! `put`: write one key per operation. Also the writer of `watch-latency`, whose
//! values carry the time they were sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::PutRequest;
use tonic::transport::Channel;

use super::Outcome;
use crate::keys::KeySpace;

/// Bytes at the start of a stamped value that hold its send time.
pub const STAMP_BYTES: usize = 8;

/// Which key each put writes.
#[derive(Debug, Clone)]
pub enum KeyOrder {
    /// A key drawn at random from the key space.
    Random,
    /// The next key of a sequence shared by every client, so that no two puts of a
    /// run write the same key until the key space wraps.
    Sequential(Arc<AtomicU64>),
}

/// One client's put loop state.
#[derive(Debug)]
pub struct Put {
    kv: KvClient<Channel>,
    keys: KeySpace,
    value: Vec<u8>,
    order: KeyOrder,
    stamp_epoch: Option<Instant>,
    rng: StdRng,
}

impl Put {
    /// Puts of `value` over `keys`; with `stamp_epoch`, the first [`STAMP_BYTES`] of
    /// each value are overwritten with the send time (see [`stamp`]).
    pub fn new(
        kv: KvClient<Channel>,
        keys: KeySpace,
        value: Vec<u8>,
        order: KeyOrder,
        stamp_epoch: Option<Instant>,
        rng: StdRng,
    ) -> Put {
        Put {
            kv,
            keys,
            value,
            order,
            stamp_epoch,
            rng,
        }
    }

    /// Writes one key.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        let index = match &self.order {
            KeyOrder::Random => self.keys.random_index(&mut self.rng),
            KeyOrder::Sequential(next) => next.fetch_add(1, Ordering::Relaxed),
        };
        let mut value = self.value.clone();
        if let Some(epoch) = self.stamp_epoch {
            stamp(&mut value, epoch, Instant::now());
        }
        self.kv
            .put(PutRequest {
                key: self.keys.key(index),
                value,
                ..Default::default()
            })
            .await?;
        Ok(Outcome::Done)
    }
}

/// Writes `now` as nanoseconds since `epoch` (little-endian) into the first
/// [`STAMP_BYTES`] of `value`, growing it if it is shorter. The watcher runs in the
/// same process, so a monotonic clock read on both sides needs no clock sync.
pub fn stamp(value: &mut Vec<u8>, epoch: Instant, now: Instant) {
    if value.len() < STAMP_BYTES {
        value.resize(STAMP_BYTES, b'0');
    }
    let nanos = u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
    value[..STAMP_BYTES].copy_from_slice(&nanos.to_le_bytes());
}

/// The send time stamped into `value` by [`stamp`], if it carries one.
pub fn read_stamp(value: &[u8], epoch: Instant) -> Option<Instant> {
    let bytes: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    epoch.checked_add(std::time::Duration::from_nanos(u64::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_stamp_reads_back() {
        let epoch = Instant::now();
        let sent = epoch + Duration::from_micros(1234);
        let mut value = b"xy".to_vec();
        stamp(&mut value, epoch, sent);
        assert_eq!(value.len(), STAMP_BYTES);
        assert_eq!(read_stamp(&value, epoch), Some(sent));
        assert_eq!(read_stamp(b"short", epoch), None);
    }
}
