//! The store's own history, read back after a run: a watch from revision 1 on the
//! workload's prefix replays every change, and ranges at sampled revisions must
//! agree with replaying it — so the history the checkers trust is itself checked
//! against a second read path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};
use synod_check::{check_history_order, state_at, Change};

use crate::error::HarnessError;

/// How long reading the history back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Revisions at which a range is compared with the replayed history.
const RANGE_SAMPLES: usize = 25;

/// The changes of one watch response, in order.
pub fn changes_of(response: &WatchResponse) -> Vec<Change> {
    response
        .events()
        .iter()
        .filter_map(|event| {
            let kv = event.kv()?;
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            Some(match event.event_type() {
                EventType::Put => Change::put(
                    kv.mod_revision(),
                    key,
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ),
                EventType::Delete => Change::delete(kv.mod_revision(), key),
            })
        })
        .collect()
}

/// Every change under `prefix` up to revision `through` (which must be a
/// revision that changed a key under `prefix`), by a watch from revision 1.
pub async fn read_history(
    client: &mut Client,
    prefix: &str,
    through: i64,
) -> Result<Vec<Change>, HarnessError> {
    let options = WatchOptions::new().with_prefix().with_start_revision(1);
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut stream = client
        .watch(prefix, Some(options))
        .await
        .map_err(|error| HarnessError::request("watch the history from revision 1", error))?;
    let mut history: Vec<Change> = Vec::new();
    while history.last().is_none_or(|last| last.revision < through) {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err(HarnessError::Malformed("the history watch ended".into())),
            Ok(Err(error)) => return Err(HarnessError::request("read the history", error)),
            Err(_) => {
                return Err(HarnessError::timeout(
                    format!(
                        "the history watch did not reach revision {through} (got {} changes)",
                        history.len()
                    ),
                    READ_TIMEOUT,
                    "",
                ))
            }
        };
        if response.canceled() {
            return Err(HarnessError::Malformed(format!(
                "the history watch was canceled: {response:?}"
            )));
        }
        history.extend(changes_of(&response));
    }
    check_history_order(&history).map_err(|error| HarnessError::Malformed(error.to_string()))?;
    Ok(history)
}

/// The keys under `prefix` and their values at `revision`, by a range.
async fn range_at(
    client: &mut Client,
    prefix: &str,
    revision: i64,
) -> Result<BTreeMap<String, String>, HarnessError> {
    let options = GetOptions::new().with_prefix().with_revision(revision);
    let response = client
        .get(prefix, Some(options))
        .await
        .map_err(|error| HarnessError::request(format!("range at revision {revision}"), error))?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect())
}

/// Checks that ranges at a sample of the history's revisions (and its last)
/// return what replaying the history gives.
pub async fn check_history_against_ranges(
    client: &mut Client,
    prefix: &str,
    history: &[Change],
) -> Result<(), String> {
    let step = (history.len() / RANGE_SAMPLES).max(1);
    let sampled = history
        .iter()
        .step_by(step)
        .chain(history.last())
        .map(|change| change.revision);
    for revision in sampled {
        let stored = range_at(client, prefix, revision)
            .await
            .map_err(|error| error.to_string())?;
        let replayed = state_at(history, revision);
        if stored != replayed {
            return Err(format!(
                "a range at revision {revision} disagrees with the watched history\n  \
                 range:    {stored:?}\n  replayed: {replayed:?}"
            ));
        }
    }
    Ok(())
}
