//! The Raft log and hard state of one group: a write-ahead log of its own.
//!
//! Appends, truncations, purges and vote changes are records appended to a segment
//! file and flushed with `fdatasync` before openraft is told they are done (a
//! leader's own appends excepted, see below): that is what makes an acknowledged
//! write survive a crash. An append-only file needs one
//! small sequential write and one flush per batch, where a B-tree commit rewrites
//! pages all over its file; the log's speed bounds every write the cluster takes.
//!
//! In memory the store keeps where each entry lies and a cache of the newest entries
//! (the ones replication is about to send), so readers rarely touch the disk.
//!
//! A leader need not wait for its own flush before it replicates (Raft thesis,
//! §10.2.1; etcd does the same): see [`LogStore::pipeline_leader_appends`].

mod record;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use tokio::sync::watch;

use crate::error::{StoreError, StoreResult};
use crate::sync::lock;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use record::{Read, Record};
use segment::Location;
use writer::{Effect, FramedEntry, Writer};

/// How much of the log a store keeps in memory, and how large its files grow.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Encoded bytes of the newest entries kept in memory: replication sends
    /// entries just after they are appended, so followers that keep up never make
    /// the leader read the disk. A cached entry holds its decoded command as well
    /// as its encoding, so it takes two to three times this in memory; the default
    /// (8 MiB, seconds of log at full write load) was measured to cost about 70 MiB
    /// less per member than 32 MiB, with no loss of throughput.
    pub cache_bytes: usize,
    /// Size at which the writer starts a new segment file. Purged entries leave
    /// the disk a whole segment at a time.
    pub segment_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            cache_bytes: 8 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The log store of one Raft group. Cheap to clone: clones share the files, the
/// writer and the in-memory index.
#[derive(Clone)]
pub struct LogStore {
    contents: Arc<Mutex<Contents>>,
    writer: Arc<Mutex<Writer>>,
    durable: watch::Receiver<u64>,
    /// This member and the way to wake the flusher, once leader appends are
    /// pipelined. One pending wake-up covers every append before it is taken.
    pipelined: Option<(NodeId, mpsc::SyncSender<()>)>,
}

/// What the log holds, as readers see it.
struct Contents {
    slots: BTreeMap<u64, Slot>,
    cache: BTreeMap<u64, Cached>,
    cached_bytes: usize,
    cache_bytes_max: usize,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    /// Read handles of the segments, by sequence number.
    files: BTreeMap<u64, Arc<File>>,
    /// Numbers the appends, so the writer can tell a slot it wrote from one that
    /// was truncated and filled again meanwhile.
    appends: u64,
}

struct Slot {
    log_id: LogId,
    append: u64,
    /// Where the entry is on disk; `None` until the writer has written it.
    at: Option<Location>,
}

struct Cached {
    entry: Entry,
    bytes: usize,
}

/// How to get an entry a reader asked for.
enum Source {
    Memory(Entry),
    Disk(Arc<File>, Location),
}

impl Contents {
    fn cache(&mut self, index: u64, entry: Entry, bytes: usize) {
        if let Some(old) = self.cache.insert(index, Cached { entry, bytes }) {
            self.cached_bytes -= old.bytes;
        }
        self.cached_bytes += bytes;
    }

    /// Drops every entry at `from` and above.
    fn truncate(&mut self, from: u64) {
        self.slots.split_off(&from);
        for cached in self.cache.split_off(&from).into_values() {
            self.cached_bytes -= cached.bytes;
        }
    }

    /// Drops every entry up to and including `upto`.
    fn purge(&mut self, upto: u64) {
        let start = upto.saturating_add(1);
        self.slots = self.slots.split_off(&start);
        let kept = self.cache.split_off(&start);
        for cached in std::mem::replace(&mut self.cache, kept).into_values() {
            self.cached_bytes -= cached.bytes;
        }
    }

    /// Records where the writer put entries, then trims the cache to its budget,
    /// oldest first, keeping every entry not yet written.
    fn written(&mut self, placed: Vec<(u64, u64, Location)>) {
        for (index, append, at) in placed {
            if let Some(slot) = self.slots.get_mut(&index) {
                if slot.append == append {
                    slot.at = Some(at);
                }
            }
        }
        while self.cached_bytes > self.cache_bytes_max {
            let Some(oldest) = self.cache.first_entry() else {
                break;
            };
            let written = self
                .slots
                .get(oldest.key())
                .is_none_or(|slot| slot.at.is_some());
            if !written {
                break;
            }
            self.cached_bytes -= oldest.remove().bytes;
        }
    }

    fn sources<RB: RangeBounds<u64>>(&self, range: RB) -> StoreResult<Vec<Source>> {
        self.slots
            .range(range)
            .map(|(index, slot)| {
                if let Some(cached) = self.cache.get(index) {
                    return Ok(Source::Memory(cached.entry.clone()));
                }
                let at = slot.at.ok_or_else(|| {
                    StoreError::Corrupt(format!("log entry {index} is neither cached nor written"))
                })?;
                let file = self.files.get(&at.segment).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "log entry {index} lies in segment {}, which is gone",
                        at.segment
                    ))
                })?;
                Ok(Source::Disk(file.clone(), at))
            })
            .collect()
    }
}

impl Source {
    fn load(self) -> StoreResult<Entry> {
        match self {
            Source::Memory(entry) => Ok(entry),
            Source::Disk(file, at) => {
                let mut bytes = vec![0; at.len];
                file.read_exact_at(&mut bytes, at.offset)?;
                match Record::read(&bytes)? {
                    Read::Record(Record::Entry(entry), _) => Ok(entry),
                    _ => Err(StoreError::Corrupt(format!(
                        "the Raft log record at byte {} of segment {} is not the entry it should be",
                        at.offset, at.segment
                    ))),
                }
            }
        }
    }
}

impl LogStore {
    /// Opens the log kept in `dir` (creating it if need be) and replays it.
    pub fn open(dir: &Path, limits: LogLimits) -> StoreResult<Self> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        let recovered = segment::recover(dir)?;
        let (active_seq, active, active_len) = match recovered.segments.last_key_value() {
            Some((&seq, _)) => (
                seq,
                segment::open_for_writing(dir, seq)?,
                recovered.last_len,
            ),
            None => (1, segment::create(dir, 1)?, 0),
        };
        let active_zeroed = active.metadata()?.len().max(active_len);
        // What was read back may have been in the page cache only (a leader's
        // append not yet flushed when the process died): make it durable before
        // anything counts on it.
        active.sync_data()?;
        let written_upto = recovered
            .entries
            .last_key_value()
            .map_or(0, |(index, _)| *index);
        let (durable, durable_receiver) = watch::channel(written_upto);
        let mut segments = recovered.segments;
        segments.entry(active_seq).or_insert(0);
        let mut files = BTreeMap::new();
        for &seq in segments.keys() {
            files.insert(seq, segment::open_for_reading(dir, seq)?);
        }
        let slots = recovered
            .entries
            .into_iter()
            .map(|(index, (log_id, at))| {
                let slot = Slot {
                    log_id,
                    append: 0,
                    at: Some(at),
                };
                (index, slot)
            })
            .collect();
        let contents = Arc::new(Mutex::new(Contents {
            slots,
            cache: BTreeMap::new(),
            cached_bytes: 0,
            cache_bytes_max: limits.cache_bytes,
            last_purged: recovered.last_purged,
            vote: recovered.vote,
            committed: recovered.committed,
            files,
            appends: 0,
        }));
        let writer = Writer {
            dir: dir.to_path_buf(),
            contents: contents.clone(),
            active: Arc::new(active),
            active_seq,
            active_len,
            active_zeroed,
            segments,
            segment_bytes: limits.segment_bytes,
            failed: None,
            written_upto,
            unflushed_upto: None,
            truncations: 0,
            durable,
            lazy: Vec::new(),
        };
        Ok(Self {
            contents,
            writer: Arc::new(Mutex::new(writer)),
            durable: durable_receiver,
            pipelined: None,
        })
    }

    /// Lets member `me`, while it leads, acknowledge its own appends as soon as
    /// they are written, flushing them on a thread of their own. openraft then
    /// sends each entry to the followers while the leader's disk writes it,
    /// instead of after: one flush less on every write's path.
    ///
    /// openraft counts the leader's own copy at once, so it may find an entry
    /// committed while only one follower has it on disk. That is safe only because
    /// nothing acts on the commitment before the leader's flush too: the state
    /// machine must wait for [`LogStore::durable`] before it applies (see
    /// `StateMachine::wait_for_log`), and the network must not tell followers of a
    /// commit index beyond it. Then every entry any member applies, and every
    /// answer, is on the disks of a majority.
    pub fn pipeline_leader_appends(mut self, me: NodeId) -> StoreResult<Self> {
        let (wake, woken) = mpsc::sync_channel(1);
        let writer = self.writer.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || writer::run_flusher(writer, woken))?;
        self.pipelined = Some((me, wake));
        Ok(self)
    }

    /// The index up to which every entry of the log is on disk.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// The id of the newest entry appended (or purged into a snapshot). A member
    /// answering a pre-vote compares it with the candidate's, without waiting on
    /// Raft's core.
    pub fn last_log_id(&self) -> Option<LogId> {
        let contents = self.contents();
        contents
            .slots
            .last_key_value()
            .map(|(_, slot)| slot.log_id)
            .or(contents.last_purged)
    }

    /// The flusher's wake-up, if this member leads and pipelines its appends.
    fn leader_flusher(&self) -> Option<&mpsc::SyncSender<()>> {
        let (me, wake) = self.pipelined.as_ref()?;
        let vote = self.contents().vote?;
        (vote.is_committed() && vote.leader_id().voted_for() == Some(*me)).then_some(wake)
    }

    fn contents(&self) -> MutexGuard<'_, Contents> {
        lock(&self.contents)
    }

    /// Writes `record`, flushed if `effect` asks for it.
    fn write(&self, record: &Record, effect: Effect) -> StoreResult<()> {
        lock(&self.writer).record(record, effect)
    }

    fn read_entries<RB: RangeBounds<u64>>(&self, range: RB) -> StoreResult<Vec<Entry>> {
        let sources = self.contents().sources(range)?;
        sources.into_iter().map(Source::load).collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(range).map_err(StoreError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_log_id = self.last_log_id();
        Ok(LogState {
            last_purged_log_id: self.contents().last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.contents().vote = Some(*vote);
        self.write(&Record::Vote(*vote), Effect::Durable)
            .map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.contents().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.contents().committed = committed;
        // The committed index is a hint that speeds up restart; it becomes durable with
        // the next flush, and losing it only delays re-applying the log. So it is not
        // flushed, nor even written, on its own: it goes out with the next append.
        self.write(&Record::Committed(committed), Effect::Lazy)
            .map_err(StoreError::write_logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.contents().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut framed = Vec::new();
        {
            let mut contents = self.contents();
            for entry in entries {
                let bytes = record::frame_entry(&entry).map_err(StoreError::write_logs)?;
                contents.appends += 1;
                let append = contents.appends;
                let index = entry.log_id.index;
                let slot = Slot {
                    log_id: entry.log_id,
                    append,
                    at: None,
                };
                contents.slots.insert(index, slot);
                contents.cache(index, entry, bytes.len());
                framed.push(FramedEntry {
                    index,
                    append,
                    bytes,
                });
            }
        }
        let flusher = self.leader_flusher();
        let effect = if flusher.is_some() {
            Effect::Background
        } else {
            Effect::Durable
        };
        let outcome = lock(&self.writer).append(&framed, effect);
        if let (Ok(()), Some(flusher)) = (&outcome, flusher) {
            // Full: a wake-up is pending and will see this append too.
            let _ = flusher.try_send(());
        }
        callback.log_io_completed(outcome.map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.contents().truncate(log_id.index);
        let mut writer = lock(&self.writer);
        writer.truncating(log_id.index);
        writer
            .record(&Record::Truncate(log_id.index), Effect::Durable)
            .map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut contents = self.contents();
            contents.purge(log_id.index);
            contents.last_purged = contents.last_purged.max(Some(log_id));
        }
        self.write(&Record::Purge(log_id), Effect::Purge(log_id.index))
            .map_err(StoreError::write_logs)
    }
}
