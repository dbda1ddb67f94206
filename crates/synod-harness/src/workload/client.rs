//! One workload client: random operations on random keys through random members,
//! each recorded with its call and return times. An operation without an answer
//! is recorded as unknown (it may or may not have taken effect); a read without
//! one is left out, since it changed nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use synod_check::{Change, Event, Operation, Outcome, RevisionObservation};

use super::{micros_since, Counters, Endpoints, Recorded, WorkloadOptions};
use crate::client::quick_client;
use crate::rng::SeededRng;

/// Streams of [`SeededRng::derive`] for clients start here (one per client).
const CLIENT_STREAM_BASE: u64 = 1_000;

/// Pause after a member could not be reached, before trying another.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Everything one client task needs.
pub(super) struct ClientTask {
    pub id: usize,
    pub seed: u64,
    pub options: WorkloadOptions,
    pub endpoints: Endpoints,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

/// What one operation returned.
struct Answer {
    outcome: Outcome,
    revision: Option<i64>,
    acknowledged: Option<Change>,
}

impl Answer {
    fn unknown() -> Answer {
        Answer {
            outcome: Outcome::Unknown,
            revision: None,
            acknowledged: None,
        }
    }
}

/// Runs one client until told to stop; returns what it recorded.
pub(super) async fn run(task: ClientTask) -> Recorded {
    let mut rng = SeededRng::derive(task.seed, CLIENT_STREAM_BASE + task.id as u64);
    let mut connections: HashMap<String, Client> = HashMap::new();
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut recorded = Recorded::default();
    let mut sequence = 0u64;
    while !task.stop.load(Ordering::SeqCst) {
        let endpoints = task.endpoints.borrow().clone();
        let Some(endpoint) = endpoints.get(rng.below(endpoints.len())).cloned() else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        let client = match connections.get(&endpoint) {
            Some(client) => client.clone(),
            None => match quick_client(&endpoint, task.options.request_timeout).await {
                Some(client) => {
                    connections.insert(endpoint.clone(), client.clone());
                    client
                }
                None => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let epoch = task.start.elapsed().as_millis() / task.options.key_epoch.as_millis().max(1);
        let key = format!(
            "{}e{epoch:04}/k{}",
            task.options.prefix,
            rng.below(task.options.keys)
        );
        sequence += 1;
        let value = format!("c{}-{sequence}", task.id);
        let choice = rng.below(100);
        let operation = match choice {
            0..40 => Operation::Get,
            40..65 => Operation::Put(value),
            65..75 => Operation::Delete,
            _ => Operation::CompareAndSwap {
                expected: last_seen.get(&key).cloned().flatten(),
                new: value,
            },
        };
        let call = micros_since(task.start);
        let answer = perform(client, &key, &operation).await;
        let ret = micros_since(task.start);
        if answer.outcome == Outcome::Unknown {
            task.counters.unknown.fetch_add(1, Ordering::Relaxed);
            // The member may be down or cut off: connect afresh next time, after a
            // pause (a member that refuses connections fails requests at once).
            connections.remove(&endpoint);
            tokio::time::sleep(RECONNECT_PAUSE).await;
            if operation == Operation::Get {
                continue;
            }
        } else {
            task.counters.answered.fetch_add(1, Ordering::Relaxed);
        }
        if let Outcome::Value(seen) = &answer.outcome {
            last_seen.insert(key.clone(), seen.clone());
        }
        if let Some(revision) = answer.revision {
            recorded.revisions.push(RevisionObservation {
                call,
                ret,
                revision,
            });
        }
        recorded.acknowledged.extend(answer.acknowledged);
        recorded.served_by.push(endpoint);
        recorded.history.push(Event {
            key,
            operation,
            call,
            ret,
            outcome: answer.outcome,
        });
    }
    recorded
}

/// Sends one operation and interprets the answer.
async fn perform(mut client: Client, key: &str, operation: &Operation) -> Answer {
    match operation {
        Operation::Get => match client.get(key, None).await {
            Ok(response) => {
                let value = response
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                Answer {
                    outcome: Outcome::Value(value),
                    revision: response.header().map(|header| header.revision()),
                    acknowledged: None,
                }
            }
            Err(_) => Answer::unknown(),
        },
        Operation::Put(value) => match client.put(key, value.as_str(), None).await {
            Ok(response) => {
                let revision = response.header().map(|header| header.revision());
                Answer {
                    outcome: Outcome::Done,
                    revision,
                    acknowledged: revision.map(|revision| Change::put(revision, key, value)),
                }
            }
            Err(_) => Answer::unknown(),
        },
        Operation::Delete => match client.delete(key, None).await {
            Ok(response) => {
                let revision = response.header().map(|header| header.revision());
                // A delete of an absent key changes nothing and makes no revision.
                let deleted = response.deleted() > 0;
                Answer {
                    outcome: Outcome::Done,
                    revision,
                    acknowledged: revision
                        .filter(|_| deleted)
                        .map(|revision| Change::delete(revision, key)),
                }
            }
            Err(_) => Answer::unknown(),
        },
        Operation::CompareAndSwap { expected, new } => {
            let compare = match expected {
                Some(expected) => Compare::value(key, CompareOp::Equal, expected.as_str()),
                None => Compare::create_revision(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, new.as_str(), None)]);
            match client.txn(txn).await {
                Ok(response) => {
                    let revision = response.header().map(|header| header.revision());
                    let swapped = response.succeeded();
                    Answer {
                        outcome: Outcome::Swapped(swapped),
                        revision,
                        acknowledged: revision
                            .filter(|_| swapped)
                            .map(|revision| Change::put(revision, key, new)),
                    }
                }
                Err(_) => Answer::unknown(),
            }
        }
    }
}
