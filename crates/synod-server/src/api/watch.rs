//! The etcd Watch service.
//!
//! Each stream is served by one task that owns the stream's watchers. A watcher is
//! a position in the store's change history: the task reads the history from that
//! position up to the applied revision and sends what matches. A watcher that falls
//! behind (a slow client, a start revision in the past) simply reads further back,
//! so it never holds up writes or other streams, and every event is delivered once,
//! in revision order, on any member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use synod_proto::etcdserverpb::watch_create_request::FilterType;
use synod_proto::etcdserverpb::watch_request::RequestUnion;
use synod_proto::etcdserverpb::watch_server::Watch;
use synod_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use synod_proto::mvccpb::event::EventType;
use synod_proto::mvccpb::Event;
use synod_storage::mvcc::span::KeySpan;
use synod_storage::Applied;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::require_leader;
use crate::history_cursor::HistoryCursor;
use crate::limits::{WATCHERS_PER_STREAM_MAX, WATCH_RESPONSES_BUFFERED};
use crate::node::Node;

/// etcd's id for "no watch" in responses that concern the whole stream.
const NO_WATCH_ID: i64 = -1;

/// etcd's cancel reason for a watch id already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Serves the Watch service of one node.
pub struct WatchService {
    node: Arc<Node>,
    progress_interval: Duration,
}

impl WatchService {
    /// The Watch service of `node`; watchers that ask for progress notifications get
    /// one every `progress_interval` while they are idle and caught up.
    pub fn new(node: Arc<Node>, progress_interval: Duration) -> Self {
        Self {
            node,
            progress_interval,
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = request.metadata().clone();
        let (sender, receiver) = mpsc::channel(WATCH_RESPONSES_BUFFERED);
        let session = WatchSession {
            node: self.node.clone(),
            applied: self.node.applied.clone(),
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            sender,
            progress_interval: self.progress_interval,
            last_progress_tick: tokio::time::Instant::now(),
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(require_leader::guard(
            &self.node,
            &metadata,
            Box::pin(ReceiverStream::new(receiver)),
        )))
    }
}

/// One watch: a key span and where it is in the history.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    cursor: HistoryCursor,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// When the watcher last sent anything (for progress notifications).
    last_sent: tokio::time::Instant,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else {
            return false;
        };
        let is_put = event.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        KeySpan::new(&self.key, &self.range_end).contains(&kv.key)
    }
}

struct WatchSession {
    node: Arc<Node>,
    applied: watch::Receiver<Applied>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    sender: mpsc::Sender<Result<WatchResponse, Status>>,
    progress_interval: Duration,
    /// When progress was last considered: a watcher is due a notification at a
    /// tick when it was sent nothing since the tick before.
    last_progress_tick: tokio::time::Instant,
}

/// The stream is gone (the client left); the session ends.
struct Closed;

impl WatchSession {
    async fn run(mut self, mut requests: Streaming<WatchRequest>) {
        let mut progress =
            tokio::time::interval(self.progress_interval.max(Duration::from_millis(10)));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let caught_up = match self.catch_up().await {
                Ok(caught_up) => caught_up,
                Err(Closed) => return,
            };
            if !caught_up {
                // More history to read: serve requests that are already waiting,
                // then keep reading.
                if let Some(Some(request)) = futures::FutureExt::now_or_never(requests.next()) {
                    if self.handle(request).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            tokio::select! {
                request = requests.next() => match request {
                    Some(request) => {
                        if self.handle(request).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                changed = self.applied.changed() => if changed.is_err() { return },
                _ = progress.tick() => {
                    if self.notify_progress().await.is_err() {
                        return;
                    }
                }
                () = self.sender.closed() => return,
            }
        }
    }

    fn revision(&self) -> i64 {
        self.applied.borrow().revision
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Closed> {
        self.sender.send(Ok(response)).await.map_err(|_| Closed)
    }

    fn header(&self, revision: i64) -> Option<synod_proto::etcdserverpb::ResponseHeader> {
        Some(self.node.header(revision))
    }

    async fn handle(&mut self, request: Result<WatchRequest, Status>) -> Result<(), Closed> {
        let request = match request {
            Ok(request) => request,
            // A request that did not decode (or a broken stream) ends the stream
            // with its error, as etcd's does: ended silently, the client would
            // take its watchers for alive.
            Err(status) => {
                let _ = self.sender.send(Err(status)).await;
                return Err(Closed);
            }
        };
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let revision = self.revision();
                    self.send(WatchResponse {
                        header: self.header(revision),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // As etcd: a progress report only when every watcher has caught up,
                // so the revision it reports is one the client has seen all of.
                let revision = self.revision();
                if self
                    .watchers
                    .values()
                    .all(|watcher| watcher.cursor.next_revision() > revision)
                {
                    self.send(WatchResponse {
                        header: self.header(revision),
                        watch_id: NO_WATCH_ID,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Closed> {
        let revision = self.revision();
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id
        };
        let refusal = if self.watchers.contains_key(&id) {
            Some(DUPLICATE_WATCH_ID.to_string())
        } else if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            Some(format!(
                "synod: a watch stream holds at most {WATCHERS_PER_STREAM_MAX} watchers; open another stream"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self
                .send(WatchResponse {
                    header: self.header(revision),
                    watch_id: NO_WATCH_ID,
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..Default::default()
                })
                .await;
        }
        if create.watch_id == 0 {
            self.next_auto_id += 1;
        }
        let key = if create.key.is_empty() {
            vec![0]
        } else {
            create.key
        };
        let filters = create.filters;
        let watcher = Watcher {
            key,
            range_end: create.range_end,
            cursor: HistoryCursor::at(
                if create.start_revision > 0 {
                    create.start_revision
                } else {
                    revision + 1
                },
                create.prev_kv,
            ),
            no_put: filters.contains(&(FilterType::Noput as i32)),
            no_delete: filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            last_sent: tokio::time::Instant::now(),
        };
        self.watchers.insert(id, watcher);
        self.send(WatchResponse {
            header: self.header(revision),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Advances every watcher by at most one batch. Returns whether all are caught up.
    async fn catch_up(&mut self) -> Result<bool, Closed> {
        let Applied {
            revision,
            compacted,
            ..
        } = *self.applied.borrow();
        let mut caught_up = true;
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.cursor.next_revision() <= revision)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if watcher.cursor.next_revision() < compacted {
                self.watchers.remove(&id);
                self.send(WatchResponse {
                    header: self.header(revision),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    ..Default::default()
                })
                .await?;
                continue;
            }
            let mut cursor = watcher.cursor;
            let changes = match cursor.read(&self.node.reader, revision).await {
                Ok(changes) => changes,
                Err(error) => return Err(self.fail(error.to_string()).await),
            };
            let last_complete = cursor.last_read();
            if last_complete < revision {
                caught_up = false;
            }
            let Some(watcher) = self.watchers.get_mut(&id) else {
                continue;
            };
            watcher.cursor = cursor;
            let events: Vec<Event> = changes
                .into_iter()
                .map(|change| change.event)
                .filter(|event| watcher.wants(event))
                .collect();
            if events.is_empty() {
                continue;
            }
            watcher.last_sent = tokio::time::Instant::now();
            let fragment = watcher.fragment;
            let response = WatchResponse {
                header: self.header(last_complete),
                watch_id: id,
                events,
                ..Default::default()
            };
            if fragment {
                for part in fragments(response, self.node.limits.request_bytes_max) {
                    self.send(part).await?;
                }
            } else {
                self.send(response).await?;
            }
        }
        Ok(caught_up)
    }

    /// Ends the stream with an internal error.
    async fn fail(&self, reason: String) -> Closed {
        let _ = self.sender.send(Err(Status::internal(reason))).await;
        Closed
    }

    /// Tells idle, caught-up watchers that asked for it how far the store has come.
    /// As etcd: a watcher sent nothing since the previous tick is due. (Measuring
    /// a whole interval since the last response instead skips every other tick
    /// when a response lands just after one.)
    async fn notify_progress(&mut self) -> Result<(), Closed> {
        let revision = self.revision();
        let now = tokio::time::Instant::now();
        let previous_tick = std::mem::replace(&mut self.last_progress_tick, now);
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| {
                watcher.progress_notify
                    && watcher.cursor.next_revision() > revision
                    && watcher.last_sent <= previous_tick
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(watcher) = self.watchers.get_mut(&id) {
                watcher.last_sent = now;
            }
            self.send(WatchResponse {
                header: self.header(revision),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

/// Splits a response whose encoding exceeds `limit` bytes into several, each marked
/// `fragment` except the last (etcd's fragmentation, for watchers that ask for it).
fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.encoded_len() <= limit {
        return vec![response];
    }
    let WatchResponse {
        header,
        watch_id,
        events,
        ..
    } = response;
    let mut parts = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut current_bytes = 0;
    for event in events {
        let size = event.encoded_len();
        if !current.is_empty() && current_bytes + size > limit {
            parts.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += size;
        current.push(event);
    }
    parts.push(current);
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(index, events)| WatchResponse {
            header,
            watch_id,
            events,
            fragment: index + 1 < count,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::mvccpb::KeyValue;

    #[test]
    fn fragments_split_large_responses_in_order() {
        let event = |n: usize| Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: format!("k{n}").into_bytes(),
                value: vec![b'x'; 100],
                ..Default::default()
            }),
            prev_kv: None,
        };
        let response = WatchResponse {
            watch_id: 7,
            events: (0..10).map(event).collect(),
            ..Default::default()
        };
        let parts = fragments(response.clone(), 350);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|part| part.fragment));
        assert!(!parts[parts.len() - 1].fragment);
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|part| part.events).collect();
        assert_eq!(rejoined, response.events);
        assert_eq!(fragments(response.clone(), usize::MAX), vec![response]);
    }
}
