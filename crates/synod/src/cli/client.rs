//! What every client command shares: the endpoints flag and a runtime.

use clap::Args;
use synod_client::Client;

/// Where the cluster is.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// Client URLs of the cluster's members (comma-separated host:port or URLs).
    #[arg(
        long,
        env = "SYNOD_ENDPOINTS",
        default_value = "127.0.0.1:2379",
        global = true
    )]
    pub endpoints: String,
}

impl Endpoints {
    /// A client for these endpoints.
    pub fn connect(&self) -> anyhow::Result<Client> {
        let endpoints: Vec<String> = self
            .endpoints
            .split(',')
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Client::connect(&endpoints)?)
    }
}

/// Runs a client command on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<T>>, T>(
    future: F,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Refuses an empty key before anything is sent (etcd would refuse it too, with
/// less to go on).
pub fn require_key(key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!key.is_empty(), "the key is empty: give a key");
    Ok(())
}

/// Parses a lease id the way etcdctl prints and reads them: hexadecimal.
pub fn parse_lease_id(value: &str) -> Result<i64, String> {
    i64::from_str_radix(value.trim_start_matches("0x"), 16)
        .map_err(|error| format!("{value:?} is not a hexadecimal lease id: {error}"))
}

/// Formats a lease id as etcdctl does.
pub fn lease_id(id: i64) -> String {
    format!("{id:016x}")
}
