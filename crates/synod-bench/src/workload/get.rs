//! `get-lin` and `get-ser`: read one random key per operation.

use rand::rngs::StdRng;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::RangeRequest;
use tonic::transport::Channel;

use super::Outcome;
use crate::keys::KeySpace;

/// One client's read loop state.
#[derive(Debug)]
pub struct Get {
    kv: KvClient<Channel>,
    keys: KeySpace,
    serializable: bool,
    rng: StdRng,
}

impl Get {
    /// Reads over `keys`: linearizable (through the leader's read index) unless
    /// `serializable` (answered from the member's local state).
    pub fn new(kv: KvClient<Channel>, keys: KeySpace, serializable: bool, rng: StdRng) -> Get {
        Get {
            kv,
            keys,
            serializable,
            rng,
        }
    }

    /// Reads one key.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        let index = self.keys.random_index(&mut self.rng);
        self.kv
            .range(RangeRequest {
                key: self.keys.key(index),
                serializable: self.serializable,
                ..Default::default()
            })
            .await?;
        Ok(Outcome::Done)
    }
}
