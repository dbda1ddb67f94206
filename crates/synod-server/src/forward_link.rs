//! A follower's forwards travel to the leader over one long-lived stream per
//! leader (`ForwardStream` in peer.proto), so a forward costs one HTTP/2 frame
//! each way instead of a stream of its own. One task per leader URL owns the
//! stream: it sends each round as it comes and hands the answers, which come back
//! in the order sent, to the rounds waiting for them. A stream that fails fails
//! the rounds under way on it (their outcome is unknown) and is opened again for
//! the next round; a leader without the call is sent one `Forward` call per round.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use synod_proto::synodpeer::raft_peer_client::RaftPeerClient;
use synod_proto::synodpeer::{ForwardRequest, ForwardResponse, ForwardedResult};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::limits::FORWARD_ROUNDS_QUEUED;

type Answer = Result<Vec<ForwardedResult>, Status>;

/// A stream open to the leader: where rounds go, where answers come, and the
/// rounds waiting for theirs, oldest first.
struct OpenStream {
    requests: mpsc::Sender<ForwardRequest>,
    answers: Streaming<ForwardResponse>,
    pending: VecDeque<oneshot::Sender<Answer>>,
}

/// One forward round and where its answer goes.
struct Round {
    request: ForwardRequest,
    reply: oneshot::Sender<Answer>,
}

/// The streams of forwards from this member, one per leader URL.
#[derive(Default)]
pub struct ForwardLinks {
    links: Mutex<HashMap<String, mpsc::Sender<Round>>>,
}

impl ForwardLinks {
    /// Sends one round to the leader at `url` (reached through `client`) and waits
    /// up to `timeout` for its answer.
    pub async fn send(
        &self,
        url: &str,
        client: RaftPeerClient<Channel>,
        request: ForwardRequest,
        timeout: Duration,
    ) -> Answer {
        let link = {
            let mut links = synod_storage::sync::lock(&self.links);
            links
                .entry(url.to_string())
                .or_insert_with(|| {
                    let (rounds, queue) = mpsc::channel(FORWARD_ROUNDS_QUEUED);
                    tokio::spawn(run(client, queue));
                    rounds
                })
                .clone()
        };
        let (reply, answer) = oneshot::channel();
        link.send(Round { request, reply })
            .await
            .map_err(|_| Status::unavailable("the forward link to the leader stopped"))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Status::unavailable(
                "the forward link to the leader stopped",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "the leader did not answer a forward in time",
            )),
        }
    }
}

/// The task of one link: opens the stream when a round comes, serves rounds until
/// it fails, and starts over; or, to a leader without the call, sends every round
/// as a call of its own.
async fn run(client: RaftPeerClient<Channel>, mut queue: mpsc::Receiver<Round>) {
    while let Some(round) = queue.recv().await {
        match open(client.clone(), round).await {
            Opened::Stream(stream) => serve(*stream, &mut queue).await,
            Opened::Failed => {}
            Opened::Unsupported(round) => {
                tracing::info!("the leader lacks the forward stream; sending one call per forward");
                call(client.clone(), round);
                while let Some(round) = queue.recv().await {
                    call(client.clone(), round);
                }
            }
        }
    }
}

/// What opening a stream came to.
enum Opened {
    Stream(Box<OpenStream>),
    /// The round's sender has its answer (the failure).
    Failed,
    /// The leader lacks the call; the round is handed back unsent.
    Unsupported(Round),
}

/// Opens the stream with `round` as its first message.
async fn open(mut client: RaftPeerClient<Channel>, round: Round) -> Opened {
    let (requests, inbox) = mpsc::channel(FORWARD_ROUNDS_QUEUED);
    let first = round.request.clone();
    let _ = requests.try_send(round.request);
    match client.forward_stream(ReceiverStream::new(inbox)).await {
        Ok(answers) => Opened::Stream(Box::new(OpenStream {
            requests,
            answers: answers.into_inner(),
            pending: VecDeque::from([round.reply]),
        })),
        Err(status) if status.code() == tonic::Code::Unimplemented => Opened::Unsupported(Round {
            request: first,
            reply: round.reply,
        }),
        Err(status) => {
            // Nothing reached the leader if the connection could not be made; the
            // status says so, as a failed call's would.
            let _ = round.reply.send(Err(status));
            Opened::Failed
        }
    }
}

/// Sends one round as a `Forward` call of its own.
fn call(mut client: RaftPeerClient<Channel>, round: Round) {
    tokio::spawn(async move {
        let mut request = tonic::Request::new(round.request);
        request.set_timeout(crate::limits::REQUEST_TIMEOUT);
        let answer = client
            .forward(request)
            .await
            .map(|response| response.into_inner().results);
        let _ = round.reply.send(answer);
    });
}

/// Sends rounds on an open stream and hands out its answers, until it fails.
async fn serve(stream: OpenStream, queue: &mut mpsc::Receiver<Round>) {
    let OpenStream {
        requests,
        mut answers,
        mut pending,
    } = stream;
    let failure = loop {
        tokio::select! {
            round = queue.recv() => {
                let Some(round) = round else { return };
                if requests.send(round.request).await.is_err() {
                    let _ = round.reply.send(Err(Status::unavailable("the forward stream closed")));
                    break Status::unavailable("the forward stream closed");
                }
                pending.push_back(round.reply);
            }
            answer = answers.message() => match answer {
                Ok(Some(response)) => {
                    if let Some(reply) = pending.pop_front() {
                        let _ = reply.send(Ok(response.results));
                    }
                }
                Ok(None) => break Status::unavailable("the leader ended the forward stream"),
                Err(status) => break status,
            },
        }
    };
    for reply in pending {
        let _ = reply.send(Err(failure.clone()));
    }
}
