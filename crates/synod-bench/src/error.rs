//! What can stop a benchmark before it measures anything.
//!
//! Errors during the measured run are not here: they are counted, and the first one
//! is reported with the results, because a benchmark that stops at the first timeout
//! tells nothing about the other 99.9% of requests.

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments make no sense together.
    #[error("{0}")]
    Usage(String),
    /// An endpoint is not a URL tonic can dial.
    #[error("bad endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// An endpoint did not accept a connection.
    #[error(
        "cannot connect to {endpoint}: {reason} (is a server listening there? check --endpoints)"
    )]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// A request made while setting up (granting a lease, creating a watch) failed.
    #[error("setup failed: {what}: {reason}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The server's answer.
        reason: String,
    },
    /// The runtime could not be built or a task died.
    #[error("benchmark runtime: {0}")]
    Runtime(String),
}

/// An error and its chain of causes on one line, e.g. "transport error: tcp connect
/// error: Connection refused (os error 111)": tonic's top-level messages alone are
/// too vague to act on.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    with_causes(error.to_string(), error.source())
}

/// A gRPC status as one line: its code and message ("Unavailable: etcdserver: no
/// leader"), with the transport cause when there is one.
pub fn describe_status(status: &tonic::Status) -> String {
    with_causes(
        format!("{:?}: {}", status.code(), status.message()),
        std::error::Error::source(status),
    )
}

/// `text` followed by each message of the `cause` chain it does not already say.
fn with_causes(mut text: String, mut cause: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(inner) = cause {
        let message = inner.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = inner.source();
    }
    text
}
