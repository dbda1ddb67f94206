//! What `synod` prints when a command fails: one line that says what failed, why,
//! and, where there is one, what to do. The whole chain of causes (the transport
//! library's included) is printed only under `--debug`.

use std::error::Error as StdError;
use std::io;

use synod_client::ClientError;

/// The one line that explains `error`. `endpoints` is the `--endpoints` value
/// the command ran with, if it takes one.
pub fn explain(error: &anyhow::Error, endpoints: Option<&str>) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        // A client error is explained whole: its sources are the transport's
        // internals.
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            append(&mut line, &client_error(client, endpoints));
            return line;
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            append(&mut line, &status_error(status, endpoints));
            return line;
        }
        // A cause often repeats its source's text ("cannot listen on X: address
        // in use" above "address in use"): each text once.
        let text = cause.to_string();
        if !line.contains(&text) {
            append(&mut line, &text);
        }
        if let Some(hint) = cause.downcast_ref::<io::Error>().and_then(io_hint) {
            append(&mut line, hint);
            return line;
        }
    }
    line
}

fn append(line: &mut String, text: &str) {
    if !line.is_empty() {
        line.push_str(": ");
    }
    line.push_str(text);
}

fn io_hint(error: &io::Error) -> Option<&'static str> {
    match error.kind() {
        io::ErrorKind::AddrInUse => Some(
            "is another member or etcd running on it? choose another address with --listen-client-urls or --listen-peer-urls",
        ),
        io::ErrorKind::PermissionDenied => Some(
            "not allowed: a port below 1024 needs privileges (CAP_NET_BIND_SERVICE); a path, its owner's permissions",
        ),
        _ => None,
    }
}

fn client_error(error: &ClientError, endpoints: Option<&str>) -> String {
    match error {
        ClientError::Status(status) => status_error(status, endpoints),
        ClientError::Endpoint { .. } => format!(
            "{error}: set --endpoints (or SYNOD_ENDPOINTS) to host:port or http://host:port, comma-separated"
        ),
        other => other.to_string(),
    }
}

/// A status the server sent carries etcd's message, which is what a user of
/// etcdctl would see; a status the transport made says the cluster was not
/// reached, or that the connection to it broke.
fn status_error(status: &tonic::Status, endpoints: Option<&str>) -> String {
    let endpoints = endpoints.unwrap_or("the cluster");
    match transport_failure(status) {
        Some(Transport::NotReached(reason)) => format!(
            "cannot reach {endpoints} ({reason}): is a member running there? set --endpoints or SYNOD_ENDPOINTS"
        ),
        Some(Transport::Lost(reason)) => {
            format!("the connection to {endpoints} broke ({reason}): try again")
        }
        None => status.message().to_string(),
    }
}

/// How the transport failed under a status.
enum Transport {
    /// No connection was made.
    NotReached(String),
    /// A connection was made and then broke.
    Lost(String),
}

/// What the transport says under `status`, if the status is the transport's.
fn transport_failure(status: &tonic::Status) -> Option<Transport> {
    let mut source = StdError::source(status);
    let mut transport = false;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            let reason = io_reason(io);
            return Some(match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Transport::Lost(reason),
                _ => Transport::NotReached(reason),
            });
        }
        transport |= cause.is::<tonic::transport::Error>();
        source = cause.source();
    }
    transport.then(|| Transport::NotReached(status.message().to_string()))
}

/// An I/O error as a person says it: "connection refused", not "Connection
/// refused (os error 111)".
fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => {
            let text = error.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_that_repeats_its_source_is_said_once() {
        let source = io::Error::new(io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(source)
            .context("cannot listen on 127.0.0.1:2379: Address already in use");
        assert_eq!(
            explain(&error, None),
            "cannot listen on 127.0.0.1:2379: Address already in use: is another member or etcd running on it? choose another address with --listen-client-urls or --listen-peer-urls"
        );
    }

    #[test]
    fn a_server_status_gives_its_message_alone() {
        let error = anyhow::Error::new(ClientError::Status(tonic::Status::invalid_argument(
            "etcdserver: key is not provided",
        )));
        assert_eq!(
            explain(&error, Some("a:1")),
            "etcdserver: key is not provided"
        );
    }
}
