//! The write-ahead Raft log across restarts: what it keeps, how it recovers from a
//! write a crash cut short, and what damage it refuses.

use std::fs;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, Vote};
use synod_storage::{LogLimits, LogStore, StoreError};

type Entry = openraft::Entry<synod_storage::TypeConfig>;
type LogId = openraft::LogId<u64>;
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Tiny segments and no cache: every test crosses segment files and reads entries
/// back from disk.
const SMALL: LogLimits = LogLimits {
    cache_bytes: 0,
    segment_bytes: 256,
};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|index| Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        })
        .collect()
}

fn segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    Ok(paths)
}

async fn log_ids(store: &mut LogStore, range: std::ops::RangeInclusive<u64>) -> Result<Vec<LogId>> {
    Ok(store
        .try_get_log_entries(range)
        .await?
        .into_iter()
        .map(|entry| entry.log_id)
        .collect())
}

/// Closes `store` and opens its files again, as a restart does.
fn reopen(store: LogStore, dir: &Path) -> Result<LogStore> {
    reopen_with(store, dir, SMALL)
}

/// [`reopen`] with other limits.
fn reopen_with(store: LogStore, dir: &Path, limits: LogLimits) -> Result<LogStore> {
    drop(store);
    Ok(LogStore::open(dir, limits)?)
}

#[tokio::test]
async fn a_reopened_log_holds_everything_acknowledged() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    let mut store = LogStore::open(&dir, SMALL)?;
    for entry in entries(1, 1..=100) {
        store.blocking_append([entry]).await?;
    }
    // A new leader replaces the tail.
    store.truncate(log_id(1, 91)).await?;
    store.blocking_append(entries(2, 91..=95)).await?;
    store.save_committed(Some(log_id(2, 93))).await?;
    store.save_vote(&Vote::new_committed(2, 1)).await?;
    let before_purge = segments(&dir)?.len();
    store.purge(log_id(1, 60)).await?;
    let after_purge = segments(&dir)?.len();
    assert!(
        before_purge > 3,
        "{before_purge} segments: rotation never happened"
    );
    assert!(
        after_purge < before_purge,
        "purging left all {before_purge} segments"
    );

    let mut store = reopen(store, &dir)?;
    let state = store.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 60)));
    assert_eq!(state.last_log_id, Some(log_id(2, 95)));
    assert_eq!(store.read_vote().await?, Some(Vote::new_committed(2, 1)));
    assert_eq!(store.read_committed().await?, Some(log_id(2, 93)));
    let mut expected: Vec<LogId> = (61..=90).map(|index| log_id(1, index)).collect();
    expected.extend((91..=95).map(|index| log_id(2, index)));
    assert_eq!(log_ids(&mut store, 0..=200).await?, expected);

    // The reopened log goes on where it stopped.
    store.blocking_append(entries(2, 96..=120)).await?;
    let mut store = reopen(store, &dir)?;
    assert_eq!(
        store.get_log_state().await?.last_log_id,
        Some(log_id(2, 120))
    );
    assert_eq!(log_ids(&mut store, 61..=120).await?.len(), 60);
    Ok(())
}

/// Writes ten entries, damages the last segment with `damage`, as a crash in
/// the middle of the last write would, and checks that the log reopens without
/// the last entry and goes on from there.
async fn a_cut_record_is_dropped_and_the_log_goes_on(
    damage: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    let roomy = LogLimits {
        cache_bytes: 0,
        segment_bytes: 1 << 20,
    };
    let mut store = LogStore::open(&dir, roomy)?;
    store.blocking_append(entries(1, 1..=10)).await?;
    drop(store);
    damage(&segments(&dir)?.pop().ok_or("no segment")?)?;

    let mut store = LogStore::open(&dir, roomy)?;
    assert_eq!(store.get_log_state().await?.last_log_id, Some(log_id(1, 9)));
    store.blocking_append(entries(1, 10..=12)).await?;
    drop(store);
    let mut store = LogStore::open(&dir, roomy)?;
    assert_eq!(
        log_ids(&mut store, 1..=12).await?,
        (1..=12).map(|index| log_id(1, index)).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn a_record_cut_short_by_a_crash_is_dropped_and_the_log_goes_on() -> Result<()> {
    // The last entry's record loses its final bytes, as when the machine stops
    // in the middle of the write that grew the file.
    a_cut_record_is_dropped_and_the_log_goes_on(|last| {
        let end = records_end(&fs::read(last)?)?;
        fs::OpenOptions::new()
            .write(true)
            .open(last)?
            .set_len(end - 3)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_record_cut_short_within_the_zeroed_space_is_dropped_and_the_log_goes_on() -> Result<()> {
    // The write reached the disk only in part: the last record's final bytes are
    // still the zeros written ahead of it.
    a_cut_record_is_dropped_and_the_log_goes_on(|last| {
        let mut bytes = fs::read(last)?;
        let end = records_end(&bytes)? as usize;
        assert!(
            bytes.len() > end,
            "the segment ({} bytes) has no zeroed space after its records ({end})",
            bytes.len()
        );
        bytes[end - 3..end].fill(0);
        fs::write(last, bytes)?;
        Ok(())
    })
    .await
}

/// Where the records of a segment end, walking their frames (`len: u32 LE | crc:
/// u32 LE | len bytes`) up to the first that is all zeros or runs past the file.
fn records_end(bytes: &[u8]) -> Result<u64> {
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || offset + 8 + len > bytes.len() {
            break;
        }
        offset += 8 + len;
    }
    if offset == 0 {
        return Err("no records".into());
    }
    Ok(offset as u64)
}

#[tokio::test]
async fn the_active_segment_is_zeroed_ahead_and_sealed_ones_hold_only_records() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    let limits = LogLimits {
        cache_bytes: 0,
        segment_bytes: 2048,
    };
    let mut store = LogStore::open(&dir, limits)?;
    for entry in entries(1, 1..=1000) {
        store.blocking_append([entry]).await?;
    }
    let files = segments(&dir)?;
    let (active, sealed) = files.split_last().ok_or("no segment")?;
    assert!(sealed.len() > 2, "{} segments: no rotation", files.len());
    for path in sealed {
        let bytes = fs::read(path)?;
        assert_eq!(
            records_end(&bytes)?,
            bytes.len() as u64,
            "{} ends in zeros",
            path.display()
        );
    }
    let bytes = fs::read(active)?;
    assert_eq!(
        bytes.len(),
        2048,
        "the active segment is not zeroed to its size"
    );

    // Reopened, the log ends at its last record, not at the zeros, and goes on.
    let mut store = reopen_with(store, &dir, limits)?;
    assert_eq!(
        store.get_log_state().await?.last_log_id,
        Some(log_id(1, 1000))
    );
    assert_eq!(
        fs::metadata(active)?.len(),
        2048,
        "reopening cut the zeroed space off"
    );
    store.blocking_append(entries(1, 1001..=1020)).await?;
    let mut store = reopen_with(store, &dir, limits)?;
    assert_eq!(log_ids(&mut store, 1..=1020).await?.len(), 1020);
    Ok(())
}

#[tokio::test]
async fn damage_before_the_last_segment_is_refused() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    let mut store = LogStore::open(&dir, SMALL)?;
    for entry in entries(1, 1..=50) {
        store.blocking_append([entry]).await?;
    }
    drop(store);

    let first = segments(&dir)?.first().cloned().ok_or("no segment")?;
    let mut bytes = fs::read(&first)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&first, bytes)?;

    match LogStore::open(&dir, SMALL) {
        Err(StoreError::Corrupt(reason)) => assert!(reason.contains("damaged"), "{reason}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a damaged segment was accepted"),
    }
    Ok(())
}

/// Waits until `store` reports every entry up to `index` on disk.
async fn durable_through(store: &LogStore, index: u64) -> Result<()> {
    let mut durable = store.durable();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        durable.wait_for(|durable| *durable >= index),
    )
    .await??;
    Ok(())
}

#[tokio::test]
async fn a_follower_append_is_on_disk_when_acknowledged() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    // Pipelining applies to member 1's own appends; it follows member 2 here.
    let mut store = LogStore::open(&dir, SMALL)?.pipeline_leader_appends(1)?;
    store.save_vote(&Vote::new_committed(3, 2)).await?;
    store.blocking_append(entries(3, 1..=10)).await?;
    assert_eq!(*store.durable().borrow(), 10);
    Ok(())
}

#[tokio::test]
async fn a_leader_append_is_flushed_behind_it_and_survives_a_restart() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("wal");
    let mut store = LogStore::open(&dir, SMALL)?.pipeline_leader_appends(1)?;
    store.save_vote(&Vote::new_committed(3, 1)).await?;
    for index in 1..=40 {
        store.blocking_append(entries(3, index..=index)).await?;
    }
    durable_through(&store, 40).await?;

    // A leader deposed keeps what it flushed and loses its unflushed tail only
    // through a truncation, which is flushed at once.
    store.save_vote(&Vote::new_committed(4, 2)).await?;
    store.truncate(log_id(3, 31)).await?;
    assert_eq!(*store.durable().borrow(), 30);
    store.blocking_append(entries(4, 31..=35)).await?;
    assert_eq!(*store.durable().borrow(), 35);

    let store = reopen(store, &dir)?;
    assert_eq!(
        *store.durable().borrow(),
        35,
        "recovered entries are on disk"
    );
    let mut store = store;
    let mut expected: Vec<LogId> = (1..=30).map(|index| log_id(3, index)).collect();
    expected.extend((31..=35).map(|index| log_id(4, index)));
    assert_eq!(log_ids(&mut store, 0..=100).await?, expected);
    Ok(())
}
