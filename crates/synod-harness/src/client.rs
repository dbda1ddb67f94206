//! etcd clients with bounded timeouts: every request the harness makes ends, one
//! way or another, within a known time.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::cluster::READY_TIMEOUT;
use crate::error::HarnessError;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one request of a [`connect`]ed client may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `endpoints` with bounded connect and request timeouts, retrying
/// the connection for up to [`READY_TIMEOUT`].
pub async fn connect(endpoints: &[String]) -> Result<Client, HarnessError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        match Client::connect(endpoints, Some(options)).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                return Err(HarnessError::timeout(
                    format!("cannot connect to {endpoints:?}"),
                    READY_TIMEOUT,
                    error,
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A client of one member whose requests may wait up to `timeout` (a lock or a
/// campaign waits for its turn; a partitioned member may answer only by timing
/// out).
pub async fn patient_client(endpoint: &str, timeout: Duration) -> Result<Client, HarnessError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(timeout);
    Client::connect([endpoint], Some(options))
        .await
        .map_err(|error| HarnessError::request(format!("connect to {endpoint}"), error))
}

/// One attempt to connect to `endpoint` with a short connect timeout and requests
/// bounded by `request_timeout`; `None` if the member does not answer.
pub async fn quick_client(endpoint: &str, request_timeout: Duration) -> Option<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(request_timeout);
    Client::connect([endpoint], Some(options)).await.ok()
}
