//! The per-cycle log: one file holds every control cycle and every chunk of a run, so a failure
//! on the arm can be read back cycle by cycle (`lapa-edge replay`).
//!
//! Layout: the 8 magic bytes `LAPACYC1`, a little-endian `u32` length and that many bytes of JSON
//! header ([`LogHeader`]), then records, each a little-endian `u32` length and a postcard-encoded
//! [`Record`]. A 50 Hz run writes about 120 bytes a cycle (≈ 20 MB an hour). The control loop
//! never waits for the disk: records go through a bounded queue to a writer thread, and a record
//! the queue cannot take is counted, not blocked on. A log cut short by a crash reads back up to
//! its last whole record.

use crate::safety::SafetyConfig;
use lapa_boards::Joints;
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

pub const MAGIC: &[u8; 8] = b"LAPACYC1";
/// Header `format` this build writes and reads.
pub const FORMAT: u32 = 1;
/// Largest record accepted when reading (a corrupt length must not allocate gigabytes).
const MAX_RECORD: u32 = 1 << 20;
const MAX_HEADER: u32 = 1 << 20;

/// What the run was: written once at the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogHeader {
    pub format: u32,
    pub arm: String,
    pub joints: Vec<String>,
    pub units: Vec<String>,
    pub rate_hz: f32,
    pub policy: String,
    pub camera: String,
    pub instruction: String,
    pub safety: SafetyConfig,
}

/// One control cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    pub tick: u64,
    /// The tick's deadline, microseconds after the run started.
    pub deadline_us: u64,
    /// How late the tick started, microseconds.
    pub late_us: u32,
    /// Read, filter and send, microseconds.
    pub work_us: u32,
    /// Deadlines dropped just before this tick.
    pub dropped: u32,
    pub measured: Joints,
    /// The blended command before the safety filter (`None`: nothing covered this tick).
    pub proposal: Option<Joints>,
    /// What was sent (or would have been: see `sent`).
    pub command: Joints,
    pub sent: bool,
    /// [`crate::safety::flag`] bits.
    pub flags: u16,
    /// Joints the filter changed.
    pub joints: u8,
    /// Newest chunk in the blend (0: none), and how many chunks were blended.
    pub chunk: u32,
    pub sources: u8,
    /// Chunks queued after this cycle.
    pub queue: u8,
}

/// A chunk as it arrived from the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: u32,
    /// The tick whose state the policy saw, and the camera frame it saw.
    pub obs_tick: u64,
    pub frame: u64,
    /// The tick at which the loop received it.
    pub arrived_tick: u64,
    /// Observation to chunk, microseconds.
    pub latency_us: u32,
    /// False when it arrived too late to cover any future tick, or for an old instruction.
    pub accepted: bool,
    pub actions: Vec<Joints>,
}

/// Anything else worth reading back (instruction changes, e-stop, bus errors, policy errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub tick: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Cycle(CycleRecord),
    Chunk(ChunkRecord),
    Event(EventRecord),
}

/// Log errors, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a lapa cycle log (the first 8 bytes are not {:?})", String::from_utf8_lossy(MAGIC))]
    Magic { path: PathBuf },
    #[error("{path}: header: {message}")]
    Header { path: PathBuf, message: String },
    #[error("{path}: record at byte {offset}: {message}")]
    Record { path: PathBuf, offset: u64, message: String },
}

/// Counts the writer keeps.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The writing end, shared by the loop and the inference thread (cheap to clone).
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: Option<SyncSender<Record>>,
    counters: Arc<Counters>,
}

/// The writer thread; [`LogFile::finish`] flushes and reports.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    writer: LogWriter,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Totals of a finished log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTotals {
    pub written: u64,
    /// Records the queue could not take (the disk was slower than the loop).
    pub dropped: u64,
}

fn write_record(w: &mut impl Write, rec: &Record) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(rec).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)
}

fn writer_loop(rx: Receiver<Record>, mut out: BufWriter<std::fs::File>, counters: Arc<Counters>) -> std::io::Result<()> {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(rec) => {
                write_record(&mut out, &rec)?;
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            // Idle: make what was written durable enough to read after a crash.
            Err(RecvTimeoutError::Timeout) => out.flush()?,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    out.flush()?;
    out.get_ref().sync_all()
}

impl LogFile {
    /// Creates the log and starts its writer thread. An existing file is never replaced: the
    /// log of an earlier run may be the one that explains a failure.
    pub fn create(path: &Path, header: &LogHeader) -> Result<Self, LogError> {
        let io = |source| LogError::Io { path: path.to_path_buf(), source };
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists { io(std::io::Error::new(e.kind(), "exists; choose another --log or remove it")) } else { io(e) }
        })?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let json = serde_json::to_vec(header).map_err(|e| LogError::Header { path: path.to_path_buf(), message: e.to_string() })?;
        let len = u32::try_from(json.len()).map_err(|e| io(std::io::Error::other(e)))?;
        out.write_all(MAGIC).and_then(|()| out.write_all(&len.to_le_bytes())).and_then(|()| out.write_all(&json)).map_err(io)?;
        out.flush().map_err(io)?;
        let (tx, rx) = sync_channel(8192);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new().name("cycle-log".into()).spawn(move || writer_loop(rx, out, c)).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), writer: LogWriter { tx: Some(tx), counters }, thread: Some(thread) })
    }

    pub fn writer(&self) -> LogWriter {
        self.writer.clone()
    }

    /// Waits for every queued record to be written, then syncs the file. Every clone of the
    /// writer must have been dropped, or this waits for them.
    pub fn finish(mut self) -> Result<LogTotals, LogError> {
        let counters = self.writer.counters.clone();
        self.writer.tx = None;
        let r = match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("the log writer thread panicked"))),
            None => Ok(()),
        };
        r.map_err(|source| LogError::Io { path: self.path.clone(), source })?;
        Ok(LogTotals { written: counters.written.load(Ordering::Relaxed), dropped: counters.dropped.load(Ordering::Relaxed) })
    }
}

impl LogWriter {
    /// A writer that writes nothing (no `--log`).
    pub fn disabled() -> Self {
        Self { tx: None, counters: Arc::new(Counters::default()) }
    }

    /// Queues a record without blocking; false when it was dropped.
    pub fn log(&self, rec: Record) -> bool {
        let Some(tx) = &self.tx else { return true };
        match tx.try_send(rec) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

/// A log read back.
#[derive(Debug, Clone)]
pub struct Log {
    pub header: LogHeader,
    pub records: Vec<Record>,
    /// Set when the file ended inside a record (a crash or a full disk): what it was.
    pub truncated: Option<String>,
}

impl Log {
    pub fn cycles(&self) -> impl Iterator<Item = &CycleRecord> {
        self.records.iter().filter_map(|r| if let Record::Cycle(c) = r { Some(c) } else { None })
    }

    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRecord> {
        self.records.iter().filter_map(|r| if let Record::Chunk(c) = r { Some(c) } else { None })
    }

    pub fn events(&self) -> impl Iterator<Item = &EventRecord> {
        self.records.iter().filter_map(|r| if let Record::Event(c) = r { Some(c) } else { None })
    }
}

/// Reads a whole log. A damaged header or record is an error naming the byte offset; a file cut
/// inside its last record is read up to it and says so in [`Log::truncated`].
pub fn read(path: &Path) -> Result<Log, LogError> {
    let bytes = std::fs::read(path).map_err(|source| LogError::Io { path: path.to_path_buf(), source })?;
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(LogError::Magic { path: path.to_path_buf() });
    }
    let header_err = |message: String| LogError::Header { path: path.to_path_buf(), message };
    let mut cur = std::io::Cursor::new(&bytes[8..]);
    let mut len4 = [0u8; 4];
    cur.read_exact(&mut len4).map_err(|_| header_err("the file ends before the header length".into()))?;
    let hlen = u32::from_le_bytes(len4);
    if hlen > MAX_HEADER {
        return Err(header_err(format!("length {hlen} is beyond {MAX_HEADER}")));
    }
    let start = 12usize;
    let end = start + hlen as usize;
    let json = bytes.get(start..end).ok_or_else(|| header_err(format!("the file ends inside the {hlen}-byte header")))?;
    let header: LogHeader = serde_json::from_slice(json).map_err(|e| header_err(e.to_string()))?;
    if header.format != FORMAT {
        return Err(header_err(format!("format {} is not the {FORMAT} this build reads", header.format)));
    }
    // Records hold one value per joint of the SO-101; a header that says otherwise is not ours.
    let joints = lapa_boards::so101::JOINTS;
    if header.joints.len() != joints || header.units.len() != joints {
        return Err(header_err(format!("joints/units: {} and {} given, the records hold {joints}", header.joints.len(), header.units.len())));
    }
    if !(header.rate_hz.is_finite() && header.rate_hz > 0.0 && header.rate_hz <= 1000.0) {
        return Err(header_err(format!("rate_hz: {} is not a rate in (0, 1000]", header.rate_hz)));
    }
    let mut records = Vec::new();
    let mut truncated = None;
    let mut off = end;
    while off < bytes.len() {
        let Some(l) = bytes.get(off..off + 4) else {
            truncated = Some(format!("the file ends inside the length of a record at byte {off}"));
            break;
        };
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
        if len > MAX_RECORD {
            return Err(LogError::Record { path: path.to_path_buf(), offset: off as u64, message: format!("length {len} is beyond {MAX_RECORD}") });
        }
        let Some(body) = bytes.get(off + 4..off + 4 + len as usize) else {
            truncated = Some(format!("the file ends inside the {len}-byte record at byte {off}"));
            break;
        };
        let rec: Record = postcard::from_bytes(body).map_err(|e| LogError::Record { path: path.to_path_buf(), offset: off as u64, message: e.to_string() })?;
        records.push(rec);
        off += 4 + len as usize;
    }
    Ok(Log { header, records, truncated })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn header() -> LogHeader {
        LogHeader {
            format: FORMAT,
            arm: "so101_follower".into(),
            joints: ["a", "b", "c", "d", "e", "gripper"].map(String::from).to_vec(),
            units: ["deg", "deg", "deg", "deg", "deg", "%"].map(String::from).to_vec(),
            rate_hz: 50.0,
            policy: "test".into(),
            camera: "none".into(),
            instruction: "push the red block left".into(),
            safety: SafetyConfig::default(),
        }
    }

    fn cycle(tick: u64) -> Record {
        Record::Cycle(CycleRecord {
            tick,
            deadline_us: tick * 20_000,
            late_us: 3,
            work_us: 40,
            dropped: 0,
            measured: [1.0; 6],
            proposal: if tick.is_multiple_of(2) { Some([2.0; 6]) } else { None },
            command: [1.5; 6],
            sent: true,
            flags: crate::safety::flag::MAX_STEP,
            joints: 0b11,
            chunk: 7,
            sources: 2,
            queue: 1,
        })
    }

    #[test]
    fn records_round_trip_and_a_cut_file_reads_up_to_its_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.cyclelog");
        let file = LogFile::create(&path, &header()).unwrap();
        let w = file.writer();
        let mut sent = Vec::new();
        for t in 0..100 {
            sent.push(cycle(t));
        }
        sent.insert(
            10,
            Record::Chunk(ChunkRecord { id: 7, obs_tick: 3, frame: 9, arrived_tick: 9, latency_us: 1234, accepted: true, actions: vec![[0.5; 6]; 10] }),
        );
        sent.push(Record::Event(EventRecord { tick: 99, text: "e-stop from the control socket".into() }));
        for r in &sent {
            assert!(w.log(r.clone()));
        }
        drop(w);
        let totals = file.finish().unwrap();
        assert_eq!(totals, LogTotals { written: sent.len() as u64, dropped: 0 });
        let log = read(&path).unwrap();
        assert_eq!(log.header, header());
        assert_eq!(log.records, sent);
        assert_eq!(log.truncated, None);
        assert_eq!(log.cycles().count(), 100);
        assert_eq!(log.chunks().next().unwrap().latency_us, 1234);

        // Cut inside the last record: everything before it survives, and the cut is reported.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let log = read(&path).unwrap();
        assert_eq!(log.records.len(), sent.len() - 1);
        assert!(log.truncated.unwrap().contains("ends inside"));
    }

    #[test]
    fn damaged_logs_are_errors_that_name_the_file_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.cyclelog");
        std::fs::write(&path, b"not a log at all").unwrap();
        assert!(matches!(read(&path), Err(LogError::Magic { .. })));
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("bad.cyclelog") && e.contains("header"), "{e}");
        // An existing file is not replaced.
        let e = LogFile::create(&path, &header()).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        std::fs::remove_file(&path).unwrap();
        // A header that does not describe six joints.
        let mut h = header();
        h.joints.push("extra".into());
        h.units.push("deg".into());
        LogFile::create(&path, &h).unwrap().finish().unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("joints/units: 7 and 7"), "{e}");
        std::fs::remove_file(&path).unwrap();
        // A good header, then a record whose length is absurd, then one of garbage.
        let file = LogFile::create(&path, &header()).unwrap();
        file.finish().unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut b = good.clone();
        b.extend_from_slice(&(64u32 << 20).to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("byte {}", good.len())) && e.contains("beyond"), "{e}");
        let mut b = good;
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(read(&path), Err(LogError::Record { .. })));
        assert!(read(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
