//! Opening the gRPC connections the clients share.
//!
//! Each connection is one HTTP/2 connection to one endpoint, dialled eagerly so an
//! unreachable endpoint is reported before the run starts rather than as a million
//! errors during it. Connection `i` goes to endpoint `i mod n`, and client `j` uses
//! connection `j mod conns`, so load spreads evenly over members and connections.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{describe, BenchError};

/// How long dialling one endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of a run.
#[derive(Debug, Clone)]
pub struct Connections {
    channels: Vec<Channel>,
}

impl Connections {
    /// Dials `count` connections over `endpoints` round-robin, each request bounded
    /// by `request_timeout`.
    pub async fn open(
        endpoints: &[String],
        count: usize,
        request_timeout: Duration,
    ) -> Result<Connections, BenchError> {
        if count == 0 || endpoints.is_empty() {
            return Err(BenchError::Usage(
                "a run needs at least one endpoint and one connection".into(),
            ));
        }
        let mut dialers = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let endpoint =
                Endpoint::from_shared(url.clone()).map_err(|error| BenchError::Endpoint {
                    endpoint: url.clone(),
                    reason: describe(&error),
                })?;
            dialers.push((
                url,
                endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(request_timeout)
                    .tcp_nodelay(true),
            ));
        }
        let mut channels = Vec::with_capacity(count);
        for index in 0..count {
            let Some((url, dialer)) = dialers.get(index % dialers.len()) else {
                return Err(BenchError::Usage("no endpoint to connect to".into()));
            };
            let channel = dialer
                .connect()
                .await
                .map_err(|error| BenchError::Connect {
                    endpoint: url.to_string(),
                    reason: describe(&error),
                })?;
            channels.push(channel);
        }
        Ok(Connections { channels })
    }

    /// The connection client (or watcher) number `index` uses.
    pub fn for_client(&self, index: usize) -> Channel {
        // `open` always makes at least one connection, so the modulo is defined.
        self.channels[index % self.channels.len()].clone()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}
