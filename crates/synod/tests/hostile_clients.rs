//! One careless or hostile client against a real 3-member cluster: none may stop
//! the cluster's writes, take a member's memory, make it spin, or get an answer
//! that disagrees with what was committed.
//!
//! Every case runs beside a [`SteadyWriter`], which writes a key every
//! [`STEADY_INTERVAL`] through all members, and ends by checking that writes kept
//! flowing (no gap over [`WRITE_GAP_MAX`]) and that the leader's term did not move
//! (no election was needed to get past the client).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::{connect, Cluster};
use etcd_client::{Client, GetOptions};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::request_op::Request as Op;
use synod_proto::etcdserverpb::response_op::Response as OpResponse;
use synod_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest, TxnResponse};
use synod_proto::nested::{TOO_MANY_OPS, TXN_NESTING_MAX};
use tokio::task::JoinHandle;

/// How often the steady writer writes.
const STEADY_INTERVAL: Duration = Duration::from_millis(20);

/// The longest the cluster may go without acknowledging a write during a case.
const WRITE_GAP_MAX: Duration = Duration::from_secs(2);

/// Writes one key every [`STEADY_INTERVAL`] through every member (or one),
/// recording when each write was acknowledged and how long it took.
struct SteadyWriter {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(Instant, Duration)>>,
    started: Instant,
    term: u64,
    client: Client,
}

impl SteadyWriter {
    async fn start(cluster: &Cluster) -> SteadyWriter {
        Self::start_through(&cluster.endpoints()).await
    }

    async fn start_through(endpoints: &[String]) -> SteadyWriter {
        let mut client = connect(endpoints).await;
        let term = client.status().await.unwrap().raft_term();
        let writes = client.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = tokio::spawn({
            let stop = stop.clone();
            let mut client = writes;
            async move {
                let mut acknowledged = Vec::new();
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    count += 1;
                    let sent = Instant::now();
                    let put = client.put("steady", count.to_string(), None);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), put).await {
                        acknowledged.push((Instant::now(), sent.elapsed()));
                    }
                    tokio::time::sleep(STEADY_INTERVAL).await;
                }
                acknowledged
            }
        });
        SteadyWriter {
            stop,
            task,
            started,
            term,
            client,
        }
    }

    /// Stops writing and checks that writes kept flowing and the leader's term
    /// stayed where it was. Returns each write's latency.
    async fn finish(mut self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let ended = Instant::now();
        let acknowledged = self.task.await.unwrap();
        let mut gap = Duration::ZERO;
        let mut previous = self.started;
        for at in acknowledged.iter().map(|(at, _)| *at).chain([ended]) {
            gap = gap.max(at.saturating_duration_since(previous));
            previous = at;
        }
        assert!(
            gap < WRITE_GAP_MAX,
            "writes stopped for {gap:?} ({} acknowledged in {:?})",
            acknowledged.len(),
            ended - self.started
        );
        let term = self.client.status().await.unwrap().raft_term();
        assert_eq!(
            term, self.term,
            "the leader's term moved: an election was held"
        );
        acknowledged
            .into_iter()
            .map(|(_, latency)| latency)
            .collect()
    }
}

/// The `quantile` (0 to 1) of `latencies`.
fn quantile(mut latencies: Vec<Duration>, quantile: f64) -> Duration {
    latencies.sort();
    let last = latencies.len().saturating_sub(1);
    latencies
        .get((last as f64 * quantile).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// A Txn `levels` deep with no compares, nesting each next level in its success
/// branch. With `put_every_level` each level also puts `prefix/level` (two
/// operations a level); otherwise only the innermost puts (one a level). etcd
/// counts each level's operations against `--max-txn-ops` for the levels inside,
/// so with the default of 128 it takes 64 levels of two, or 128 of one.
fn nested_txn(levels: usize, prefix: &str, put_every_level: bool) -> TxnRequest {
    let mut txn: Option<TxnRequest> = None;
    for level in (0..levels).rev() {
        let mut success = Vec::new();
        if put_every_level || txn.is_none() {
            success.push(RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: format!("{prefix}/{level:03}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            });
        }
        if let Some(inner) = txn.take() {
            success.push(RequestOp {
                request: Some(Op::RequestTxn(inner)),
            });
        }
        txn = Some(TxnRequest {
            success,
            ..Default::default()
        });
    }
    txn.unwrap_or_default()
}

/// How many levels of Txn a response holds, every one of them succeeded.
fn response_levels(response: &TxnResponse) -> usize {
    assert!(response.succeeded);
    let nested = response.responses.iter().find_map(|op| match &op.response {
        Some(OpResponse::ResponseTxn(inner)) => Some(inner),
        _ => None,
    });
    1 + nested.map_or(0, response_levels)
}

/// A KV client of synod's own protocol crate, whose decoding takes responses as
/// deep as synod answers (etcd-client's prost decoding stops near 48 levels).
async fn raw_kv(endpoint: &str) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap()
}

async fn keys_under(client: &mut Client, prefix: &str) -> i64 {
    client
        .get(
            format!("{prefix}/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deeply_nested_txn_stops_no_writes_and_its_answer_is_the_truth() {
    let cluster = Cluster::start(3, &[]).await;
    let writer = SteadyWriter::start(&cluster).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let endpoints = cluster.endpoints();

    // Writers on the leader, so the nested Txns share batch entries with others.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for writer_index in 0..8 {
        let mut client = cluster.client(leader).await;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                count += 1;
                let _ = client
                    .put(format!("load/{writer_index}"), count.to_string(), None)
                    .await;
            }
        }));
    }

    let mut client = cluster.client(leader).await;
    for (levels, put_every_level, member, prefix) in [
        (48, true, leader, "deep48"),
        (60, true, leader, "deep60"),
        (64, true, leader, "deep64"),
        (TXN_NESTING_MAX, false, leader, "deepest"),
        (48, true, follower, "via-follower48"),
        (60, true, follower, "via-follower60"),
        (TXN_NESTING_MAX, false, follower, "via-follower-deepest"),
    ] {
        let started = Instant::now();
        let mut kv = raw_kv(&endpoints[member]).await;
        let response = kv
            .txn(nested_txn(levels, prefix, put_every_level))
            .await
            .unwrap_or_else(|status| panic!("a Txn {levels} deep to member {member}: {status}"))
            .into_inner();
        assert_eq!(response_levels(&response), levels, "{prefix}");
        let keys = if put_every_level { levels } else { 1 };
        assert_eq!(
            keys_under(&mut client, prefix).await,
            keys as i64,
            "{prefix}"
        );
        eprintln!("{prefix}: {:?}", started.elapsed());
    }

    // Past what --max-txn-ops leaves the inner levels, or past the nesting bound,
    // a Txn is refused with etcd's error before anything is written, on every
    // member.
    for member in [leader, follower] {
        for (levels, put_every_level) in [(65, true), (TXN_NESTING_MAX + 1, false)] {
            let mut kv = raw_kv(&endpoints[member]).await;
            let status = kv
                .txn(nested_txn(levels, "refused", put_every_level))
                .await
                .expect_err("a Txn nested past the bound was accepted");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
            assert_eq!(status.message(), TOO_MANY_OPS);
        }
    }
    assert_eq!(keys_under(&mut client, "refused").await, 0);

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    writer.finish().await;
    let revision = client
        .get("steady", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cluster.assert_replicas_agree(revision).await;
}

/// Sends raw bytes as the messages of a stream and decodes `Response` with prost:
/// the client side of a request that does not decode.
#[derive(Clone, Copy, Default)]
struct RawCodec<Response>(std::marker::PhantomData<Response>);

struct RawEncoder;
struct ProstDecoder<Response>(std::marker::PhantomData<Response>);

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl<Response: prost::Message + Default> tonic::codec::Decoder for ProstDecoder<Response> {
    type Item = Response;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Response>, tonic::Status> {
        Response::decode(buf)
            .map(Some)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

impl<Response: prost::Message + Default + Send + 'static> tonic::codec::Codec
    for RawCodec<Response>
{
    type Encode = Vec<u8>;
    type Decode = Response;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<Response>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<Response> {
        ProstDecoder(std::marker::PhantomData)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_request_that_does_not_decode_ends_its_stream_with_an_error() {
    use prost::Message;
    use synod_proto::etcdserverpb::watch_request::RequestUnion;
    use synod_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};

    let cluster = Cluster::start(3, &[]).await;
    let writer = SteadyWriter::start(&cluster).await;
    let channel = tonic::transport::Endpoint::from_shared(cluster.members[0].url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (requests, outbox) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"watched".to_vec(),
            ..Default::default()
        })),
    };
    requests.send(create.encode_to_vec()).await.unwrap();
    let mut responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outbox)),
            http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
            RawCodec::<WatchResponse>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let created = responses.message().await.unwrap().unwrap();
    assert!(created.created);

    // Field 1 (create_request), length-delimited, with a length that runs past
    // the end of the message.
    requests.send(vec![0x0a, 0x7f, 0x01]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the stream neither answered nor ended");
    let status = ended.expect_err("the stream ended as if nothing had gone wrong");
    assert_eq!(status.code(), tonic::Code::Internal, "{status}");
    assert!(status.message().contains("decode"), "{status}");
    writer.finish().await;
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// An HTTP/2 connection to `endpoint` that speaks gRPC's framing by hand.
async fn raw_h2(endpoint: &str) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Opens a Put whose one message announces `announced` bytes and sends `sent`
/// of them, never finishing it. Returns the response to come and the stream, which
/// must be kept for the message to stay unfinished.
async fn unfinished_put(
    client: &mut h2::client::SendRequest<Bytes>,
    endpoint: &str,
    announced: u32,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{endpoint}/etcdserverpb.KV/Put"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    let mut message = vec![0u8];
    message.extend_from_slice(&announced.to_be_bytes());
    message.resize(5 + sent, b'x');
    stream.send_data(Bytes::from(message), false).unwrap();
    (response, stream)
}

/// The gRPC status code and message of a trailers-only response, if it came
/// within `wait`.
async fn refusal(response: h2::client::ResponseFuture, wait: Duration) -> Option<(String, String)> {
    let response = tokio::time::timeout(wait, response).await.ok()?.ok()?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or_default().to_string())
    };
    let message = header("grpc-message").unwrap_or_default();
    Some((header("grpc-status")?, percent_decoded(&message)))
}

/// A `grpc-message` header's text (gRPC percent-encodes it).
fn percent_decoded(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            None => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_connection_cannot_take_a_members_memory() {
    let cluster = Cluster::start(3, &[]).await;
    let writer = SteadyWriter::start(&cluster).await;
    let target = cluster.follower().await;
    let endpoint = cluster.members[target].endpoint();
    let pid = cluster.members[target].pid().unwrap();
    let before = resident_bytes(pid);
    let mut client = raw_h2(&endpoint).await;

    // Messages announced past the limit are refused from their header, with
    // grpc-go's error, whatever follows.
    let mut too_large = Vec::new();
    for _ in 0..32 {
        too_large.push(unfinished_put(&mut client, &endpoint, 60 * 1024 * 1024, 1024 * 1024).await);
    }
    for (response, _stream) in too_large {
        let (code, message) = refusal(response, Duration::from_secs(10))
            .await
            .expect("a message announced at 60 MiB was not refused");
        assert_eq!(code, "8", "{message}");
        assert_eq!(
            message,
            "grpc: received message larger than max (62914560 vs. 2097152)"
        );
    }

    // Messages within the limit, announced on many streams and never finished:
    // the connection holds at most its budget of them; the rest are refused.
    let mut unfinished = Vec::new();
    for _ in 0..200 {
        unfinished.push(unfinished_put(&mut client, &endpoint, 2_000_000, 1_000_000).await);
    }
    let (responses, held): (Vec<_>, Vec<_>) = unfinished.into_iter().unzip();
    let outcomes = futures::future::join_all(
        responses
            .into_iter()
            .map(|response| refusal(response, Duration::from_secs(2))),
    )
    .await;
    let mut refused = 0;
    for (code, message) in outcomes.into_iter().flatten() {
        assert_eq!(code, "8", "{message}");
        assert!(message.contains("send fewer large requests"), "{message}");
        refused += 1;
    }
    assert!(
        refused >= 150,
        "only {refused} of 200 unfinished messages were refused"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = resident_bytes(pid).saturating_sub(before);
    eprintln!(
        "{refused} of 200 unfinished messages refused; the member grew by {} MiB",
        grown / (1024 * 1024)
    );
    assert!(
        grown < 128 * 1024 * 1024,
        "one connection grew the member by {} MiB",
        grown / (1024 * 1024)
    );

    // The member still serves others.
    let mut other = cluster.client(target).await;
    other.put("after", "ok", None).await.unwrap();
    drop(held);
    drop(client);
    writer.finish().await;
}

/// CPU time process `pid` has used, user and system.
fn cpu_time(pid: nix::unistd::Pid) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 per second.
    Duration::from_millis(ticks * 10)
}

fn open_descriptors(pid: nix::unistd::Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_out_of_file_descriptors_waits_instead_of_spinning() {
    let cluster = Cluster::start(3, &[]).await;
    let writer = SteadyWriter::start(&cluster).await;
    let target = cluster.follower().await;
    let endpoint = cluster.members[target].endpoint();
    let pid = cluster.members[target].pid().unwrap();

    // Leave the member a few descriptors, then take them with connections; the
    // ones past its limit wait in the backlog, and every accept fails.
    let set_soft_limit = |limit: &str| {
        let prlimit = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
            .status()
            .expect("run prlimit (util-linux)");
        assert!(prlimit.success());
    };
    let soft_limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3).map(str::to_string))
        .unwrap();
    set_soft_limit(&(open_descriptors(pid) + 8).to_string());
    let mut connections = Vec::new();
    for _ in 0..32 {
        connections.push(tokio::net::TcpStream::connect(&endpoint).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used_before = cpu_time(pid);
    let measured = Duration::from_secs(3);
    tokio::time::sleep(measured).await;
    let used = cpu_time(pid) - used_before;
    let share = used.as_secs_f64() / measured.as_secs_f64();
    eprintln!(
        "out of descriptors, the member used {:.0}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.25,
        "the member spun: {:.0}% of a core",
        share * 100.0
    );
    assert!(
        cluster
            .log_text(target)
            .contains("cannot accept connections"),
        "the member did not say why it stopped accepting"
    );

    // Descriptors back: it serves clients again.
    drop(connections);
    set_soft_limit(&soft_limit);
    let mut client = cluster.client(target).await;
    client.put("after", "ok", None).await.unwrap();
    writer.finish().await;
}

/// The backlog of the socket listening on `port`, as `ss` reports it (its Send-Q
/// for a listening socket).
fn listen_backlog(port: u16) -> u32 {
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("nothing listens on {port}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listeners_take_a_burst_of_connections() {
    let cluster = Cluster::start(3, &[]).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for member in &cluster.members {
        for port in [member.client_port, member.peer_port] {
            let backlog = listen_backlog(port);
            assert!(
                backlog >= 1024.min(somaxconn),
                "port {port} listens with a backlog of {backlog} (somaxconn {somaxconn})"
            );
        }
    }
}

/// Starts a call of `path` on `client` with one framed `message` and a
/// `grpc-timeout` of `timeout`, which (unlike tonic's or etcd-client's) this
/// client does not enforce itself: what ends the call is the server. With
/// `close`, the request ends after the message.
async fn call_with_deadline(
    client: &h2::client::SendRequest<Bytes>,
    endpoint: &str,
    path: &str,
    message: &impl prost::Message,
    timeout: &str,
    close: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{endpoint}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    stream.send_data(Bytes::from(framed), close).unwrap();
    (response, stream)
}

/// How a call ended: its gRPC status code and message, and how many messages
/// came before.
async fn call_end(response: h2::client::ResponseFuture) -> (String, String, usize) {
    let response = response.await.unwrap();
    let header = |headers: &http::HeaderMap, name: &str| {
        headers
            .get(name)
            .map(|value| percent_decoded(value.to_str().unwrap_or_default()))
    };
    if let Some(code) = header(response.headers(), "grpc-status") {
        let message = header(response.headers(), "grpc-message").unwrap_or_default();
        return (code, message, 0);
    }
    let mut body = response.into_body();
    let mut messages = 0;
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
        messages += 1;
    }
    let trailers = body
        .trailers()
        .await
        .unwrap()
        .expect("the call ended without trailers");
    (
        header(&trailers, "grpc-status").unwrap(),
        header(&trailers, "grpc-message").unwrap_or_default(),
        messages,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_deadlines_are_honoured_and_end_the_work() {
    use synod_proto::etcdserverpb::watch_request::RequestUnion;
    use synod_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest};
    use synod_proto::v3lockpb::LockRequest;

    let mut cluster = Cluster::start(3, &[]).await;
    let writer = SteadyWriter::start(&cluster).await;
    let endpoint = cluster.members[0].endpoint();
    let client = raw_h2(&endpoint).await;
    let mut holder = cluster.client(0).await;
    let held = holder.lock("job", None).await.unwrap();

    // A lock waiter whose deadline passes is told so, as etcd tells it, and
    // leaves the queue: only the holder's key is left.
    let lock = LockRequest {
        name: b"job".to_vec(),
        lease: 0,
    };
    ends_at_its_deadline(&client, &endpoint, "/v3lockpb.Lock/Lock", &lock, true).await;
    let waiters_gone = async {
        while keys_under(&mut holder, "job").await > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), waiters_gone)
        .await
        .expect("the abandoned waiter's key stayed in the queue");
    holder.unlock(held.key()).await.unwrap();

    // A watch stream ends at its deadline, after its created response.
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"watched".to_vec(),
            ..Default::default()
        })),
    };
    let path = "/etcdserverpb.Watch/Watch";
    let messages = ends_at_its_deadline(&client, &endpoint, path, &create, false).await;
    assert!(
        messages >= 1,
        "the watch was not created before its deadline"
    );
    writer.finish().await;

    // A read on a member that has lost its quorum answers at the deadline, not
    // after synod's own request timeout.
    cluster.kill(1);
    cluster.kill(2);
    let range = RangeRequest {
        key: b"anything".to_vec(),
        ..Default::default()
    };
    ends_at_its_deadline(&client, &endpoint, "/etcdserverpb.KV/Range", &range, true).await;
}

/// Calls `path` with `message` (closing the request after it if `close`) and a
/// deadline of one second, and checks that the member ends the call at the
/// deadline, as etcd does; returns how many messages came first.
async fn ends_at_its_deadline(
    client: &h2::client::SendRequest<Bytes>,
    endpoint: &str,
    path: &str,
    message: &impl prost::Message,
    close: bool,
) -> usize {
    let started = Instant::now();
    let (response, _stream) =
        call_with_deadline(client, endpoint, path, message, "1S", close).await;
    let (code, text, messages) = tokio::time::timeout(Duration::from_secs(5), call_end(response))
        .await
        .unwrap_or_else(|_| panic!("{path} outlived its deadline"));
    assert_eq!(
        (code.as_str(), text.as_str()),
        ("4", "context deadline exceeded"),
        "{path}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{path} ended {took:?} after a 1 s deadline"
    );
    messages
}

/// A tmpfs mounted over a directory for the length of a test, so that a member's
/// disk can be filled without filling the machine's.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path`; `None` if this process may not mount
    /// (mounting needs root), in which case the test cannot run here.
    fn mount(path: &std::path::Path, bytes: u64) -> Option<Tmpfs> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Grows (or shrinks) the file system to `bytes`, as an operator adding
    /// disk space would.
    fn resize(&self, bytes: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn free_bytes(&self) -> u64 {
        let stats = nix::sys::statvfs::statvfs(&self.path).unwrap();
        stats.blocks_available() * stats.fragment_size()
    }

    /// Writes a file that leaves `left` bytes free.
    fn fill(&self, left: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while self.free_bytes() > left + chunk.len() as u64 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        file.sync_all().unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Stops member `index`, moves its data dir onto a tmpfs of `bytes`, and starts
/// it again. `None` if no tmpfs can be mounted here.
fn move_onto_tmpfs(cluster: &mut Cluster, index: usize, bytes: u64) -> Option<Tmpfs> {
    assert!(cluster.terminate(index), "the member did not stop cleanly");
    let data_dir = cluster.members[index].data_dir.clone();
    let saved = data_dir.with_extension("saved");
    std::fs::rename(&data_dir, &saved).unwrap();
    std::fs::create_dir(&data_dir).unwrap();
    let Some(tmpfs) = Tmpfs::mount(&data_dir, bytes) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (it needs root)");
        return None;
    };
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(saved.join("."))
        .arg(&data_dir)
        .status()
        .unwrap();
    assert!(copied.success());
    cluster.spawn(index);
    Some(tmpfs)
}

/// Puts until one answers as `accepted` says (bounded by `wait`); the last
/// answer's error text, if any.
async fn put_until(client: &mut Client, wait: Duration, accepted: bool) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let answer = client.put("disk", "x", None).await;
        if answer.is_ok() == accepted {
            return answer.err().map(|error| error.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "writes were still {} after {wait:?}: {answer:?}",
            if accepted { "refused" } else { "accepted" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_running_full_stops_writes_clearly_and_they_resume_by_themselves() {
    let reserve: u64 = 16 * 1024 * 1024;
    let mut cluster = Cluster::start(3, &["--disk-reserve-bytes", &reserve.to_string()]).await;
    let target = cluster.follower().await;
    let Some(disk) = move_onto_tmpfs(&mut cluster, target, 96 * 1024 * 1024) else {
        return;
    };
    cluster.wait_ready().await;
    let mut client = connect(&cluster.endpoints()).await;
    client.put("before", "ok", None).await.unwrap();

    // Below the reserve: the member raises NOSPACE, and every member refuses
    // writes with etcd's error while reads go on, on the full member too.
    let filler = disk.fill(reserve / 2);
    let refusal = put_until(&mut client, Duration::from_secs(10), false).await;
    let refusal = refusal.unwrap_or_default();
    assert!(
        refusal.contains("etcdserver: mvcc: database space exceeded"),
        "{refusal}"
    );
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    let full_member = cluster
        .client(target)
        .await
        .status()
        .await
        .unwrap()
        .header()
        .unwrap()
        .member_id();
    let raised: Vec<u64> = alarms
        .alarms()
        .iter()
        .map(|alarm| alarm.member_id())
        .collect();
    assert_eq!(raised, [full_member]);
    for member in 0..3 {
        let mut reader = cluster.client(member).await;
        let read = reader.get("before", None).await.unwrap();
        assert_eq!(read.kvs()[0].value(), b"ok");
    }

    // A defragmentation that would fill the disk is refused, leaving nothing
    // behind.
    let mut full = cluster.client(target).await;
    let error = full
        .defragment()
        .await
        .expect_err("a defragmentation on a full disk ran");
    assert!(
        error
            .to_string()
            .contains("not enough free disk to defragment"),
        "{error}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&cluster.members[target].data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".defrag") || name.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Space back: writes resume with nobody disarming anything.
    std::fs::remove_file(filler).unwrap();
    put_until(&mut client, Duration::from_secs(10), true).await;
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 0, "the NOSPACE alarm stayed");
    assert!(cluster.exited_members().is_empty(), "a member exited");
    let revision = client
        .put("after", "ok", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cluster.assert_replicas_agree(revision).await;
    drop(cluster);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_disk_fills_exits_and_restarts_with_its_data() {
    // No reserve: the disk fills under the member's writes.
    let mut cluster = Cluster::start(3, &["--disk-reserve-bytes", "0"]).await;
    let target = cluster.follower().await;
    let Some(disk) = move_onto_tmpfs(&mut cluster, target, 64 * 1024 * 1024) else {
        return;
    };
    cluster.wait_ready().await;
    let others: Vec<String> = (0..3)
        .filter(|member| *member != target)
        .map(|member| cluster.members[member].endpoint())
        .collect();
    let writer = SteadyWriter::start_through(&others).await;
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let value = "v".repeat(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut written = 0;
    // The member exits non-zero, saying why, rather than answer "stopped" for
    // ever; the others go on.
    let (_, status) = loop {
        if let Some(exited) = cluster.exited_members().pop() {
            break exited;
        }
        assert!(
            Instant::now() < deadline,
            "the member with a full disk kept running"
        );
        client
            .put(format!("key/{written:05}"), value.as_str(), None)
            .await
            .unwrap();
        written += 1;
    };
    assert!(!status.contains("exit status: 0"), "{status}");
    assert!(
        cluster.log_text(target).contains("No space left on device"),
        "{}",
        cluster.members[target].log_tail(20)
    );
    for _ in 0..20 {
        client
            .put(format!("key/{written:05}"), value.as_str(), None)
            .await
            .unwrap();
        written += 1;
    }
    writer.finish().await;

    // With room again it starts, left no partial file, and catches up.
    disk.resize(256 * 1024 * 1024);
    let snapshots = cluster.members[target].data_dir.join("snapshots");
    for entry in std::fs::read_dir(snapshots).into_iter().flatten() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "{name}");
    }
    cluster.spawn(target);
    cluster.wait_ready().await;
    let revision = client
        .put("after", "ok", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cluster.assert_replicas_agree(revision).await;
    let mut restarted = cluster.client(target).await;
    assert_eq!(keys_under(&mut restarted, "key").await, written);
    drop(cluster);
    drop(disk);
}

/// The longest a put may take while the whole key space is read over and over.
/// Before large answers were encoded off the async worker, 100k keys of 1 KiB
/// held puts up for a second (debug build).
const PUT_DURING_LARGE_READS_MAX: Duration = Duration::from_millis(500);

/// Four clients read every key (100k of 1 KiB, or `SYNOD_TEST_LARGE_READ_KEYS`)
/// over and over while one writes: no put may wait on the reads. With a release
/// build (`SYNOD_TEST_BIN`) and 200k keys this is the case measured in
/// bench/RESULTS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_range_reads_do_not_stall_writes() {
    use synod_proto::etcdserverpb::RangeRequest;

    let keys: usize = std::env::var("SYNOD_TEST_LARGE_READ_KEYS")
        .ok()
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(100_000);
    let cluster = Cluster::start(3, &[]).await;
    let target = cluster.leader().await;
    let endpoint = cluster.members[target].endpoint();

    // keys of 1 KiB, 100 to a Txn.
    let mut kv = raw_kv(&endpoint).await;
    let value = vec![b'v'; 1024];
    for first in (0..keys).step_by(100) {
        let success = (first..keys.min(first + 100))
            .map(|index| RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: format!("bulk/{index:08}").into_bytes(),
                    value: value.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let idle = SteadyWriter::start_through(std::slice::from_ref(&endpoint)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = quantile(idle.finish().await, 0.99);

    // Four clients read the whole key space over and over. They take the answer's
    // bytes and drop them, so that the time measured is the member's, not the
    // time this process takes to decode 20 MB or more per read on the same cores.
    let writer = SteadyWriter::start_through(std::slice::from_ref(&endpoint)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let whole = RangeRequest {
        key: b"bulk/".to_vec(),
        range_end: b"bulk0".to_vec(),
        ..Default::default()
    };
    for _ in 0..4 {
        let client = raw_h2(&endpoint).await;
        let stop = stop.clone();
        let endpoint = endpoint.clone();
        let whole = whole.clone();
        readers.push(tokio::spawn(async move {
            let mut lists = 0;
            while !stop.load(Ordering::Relaxed) {
                let (response, _stream) = call_with_deadline(
                    &client,
                    &endpoint,
                    "/etcdserverpb.KV/Range",
                    &whole,
                    "60S",
                    true,
                )
                .await;
                let (code, message, _) = call_end(response).await;
                assert_eq!(code, "0", "{message}");
                lists += 1;
            }
            lists
        }));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lists = 0;
    for reader in readers {
        lists += reader.await.unwrap();
    }
    let latencies = writer.finish().await;
    let worst = latencies.iter().max().copied().unwrap_or_default();
    let loaded = quantile(latencies, 0.99);
    eprintln!(
        "{lists} full reads of {keys} keys; put p99 idle {idle:?}, during the reads {loaded:?} \
         ({:.1}x), worst {worst:?}",
        loaded.as_secs_f64() / idle.as_secs_f64().max(1e-6)
    );
    assert!(
        worst < PUT_DURING_LARGE_READS_MAX,
        "a put waited {worst:?} on the reads"
    );
}
