//! The write-ahead log: every accepted event is on disk, fsynced, before anyone is told
//! "accepted".
//!
//! Layout (`<home>/wal/`): segment files `seg-<first seq>.jsonl`, one [`WalRecord`] per
//! line, and `acked`, the highest sequence number the floor has acknowledged. A segment is
//! deleted once every record in it is acknowledged; a new segment starts on every open and
//! when the active one grows past [`SEGMENT_BYTES`], so old segments are never appended to.
//!
//! One writer thread owns the active segment. It takes everything queued since its last
//! write, writes it in one `write`, calls `fdatasync` once and only then answers every
//! waiting caller (group commit): concurrent callers share the cost of one sync.
//!
//! Recovery reads every segment; a line that does not parse (the torn tail of a write cut
//! by a crash, which was therefore never acknowledged) is skipped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use polaris_protocol::NewEventBody;
use polaris_registry::ParticipantId;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::home::{Home, create_private_dir, private_file_options};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// At most this many undelivered records are kept in memory; the rest wait on disk and
/// are read back as the front is delivered, so a long outage costs disk, not memory.
pub const MEMORY_RECORDS: usize = 20_000;

/// One acknowledged event on its way to the floor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalRecord {
    /// Position in the log (1, 2, …), in acknowledgement order.
    pub seq: u64,
    /// The project it goes to.
    pub project: String,
    /// The session it goes to.
    pub session: String,
    /// How to create the session if the floor does not have it yet (a `/connect` made
    /// while the floor was down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<SessionOpen>,
    /// The event, with its `id` and `timestamp` always set.
    pub body: NewEventBody,
}

/// The session-create body the sidecar would have sent at `/connect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionOpen {
    /// The human at the keyboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<ParticipantId>,
    /// The coding agent answering them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ParticipantId>,
}

/// An event to append (the writer gives it its `seq`).
#[derive(Debug, Clone)]
pub struct Append {
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// Session-create body, if the session may not exist yet.
    pub open: Option<SessionOpen>,
    /// The event (id and timestamp set).
    pub body: NewEventBody,
}

struct WriteReq {
    items: Vec<Append>,
    reply: oneshot::Sender<io::Result<Vec<u64>>>,
}

/// What the writer and the drain share.
pub(crate) struct Shared {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Woken whenever records are appended.
    pub(crate) appended: Notify,
}

struct Inner {
    /// The oldest records not yet acknowledged, in order (at most `cap`).
    pending: VecDeque<Arc<WalRecord>>,
    /// Records not yet acknowledged, in memory or not.
    total: usize,
    /// The first record that is on disk only; every later one is on disk only too.
    spilled: Option<u64>,
    /// The writer's next seq (records below it are synced).
    next_seq: u64,
    /// Most records in memory.
    cap: usize,
    acked: u64,
    /// Segments in order: (first seq, path). The last one is the writer's.
    segments: Vec<(u64, PathBuf)>,
    /// Projects renamed while records for them were waiting (old, new), applied to
    /// records read back from disk.
    renames: Vec<(String, String)>,
}

/// The log: a handle to append and to acknowledge.
#[derive(Clone)]
pub(crate) struct Wal {
    pub(crate) shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<WriteReq>,
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// What is on disk: the acked mark, the segments and the records above the mark.
struct Recovered {
    acked: u64,
    segments: Vec<(u64, PathBuf)>,
    /// The first `cap` records above the mark.
    pending: Vec<WalRecord>,
    /// All records above the mark.
    total: usize,
    /// The first record above the mark not in `pending`.
    spilled: Option<u64>,
    max_seq: u64,
}

fn read_acked(dir: &Path) -> io::Result<u64> {
    match std::fs::read_to_string(dir.join("acked")) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for entry in rd {
                let entry = entry?;
                if let Some(first) = parse_segment_name(&entry.file_name().to_string_lossy()) {
                    segments.push((first, entry.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    segments.sort();
    Ok(segments)
}

/// Calls `f` with every whole record of the segments that may hold seqs `>= from`, in
/// order, until it returns false. A line that does not parse is skipped: only a write cut
/// short by a crash (or still in progress) leaves one, and its caller was never answered.
fn scan_records(
    segments: &[(u64, PathBuf)],
    from: u64,
    mut f: impl FnMut(WalRecord) -> bool,
) -> io::Result<()> {
    for (i, (_, path)) in segments.iter().enumerate() {
        // Segment i holds seqs below the next segment's first.
        if segments.get(i + 1).is_some_and(|n| n.0 <= from) {
            continue;
        }
        let file = match File::open(path) {
            Ok(f) => f,
            // Compacted meanwhile: everything in it was delivered.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<WalRecord>(&line) {
                Ok(r) if r.seq >= from => {
                    if !f(r) {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(segment = %path.display(), error = %e, "skipping a torn WAL line")
                }
            }
        }
    }
    Ok(())
}

fn recover(dir: &Path, cap: usize) -> io::Result<Recovered> {
    let acked = read_acked(dir)?;
    let segments = list_segments(dir)?;
    let mut pending = Vec::new();
    let mut total = 0;
    let mut spilled = None;
    let mut max_seq = acked;
    scan_records(&segments, acked + 1, |r| {
        max_seq = max_seq.max(r.seq);
        total += 1;
        if pending.len() < cap {
            pending.push(r);
        } else if spilled.is_none() {
            spilled = Some(r.seq);
        }
        true
    })?;
    Ok(Recovered {
        acked,
        segments,
        pending,
        total,
        spilled,
        max_seq,
    })
}

/// The records not yet acknowledged by the floor, oldest first (for `polaris recover`;
/// safe to call while a sidecar runs, which may deliver some of them meanwhile).
pub fn read_pending(home: &Home) -> io::Result<Vec<WalRecord>> {
    Ok(recover(&home.wal_dir(), usize::MAX)?.pending)
}

fn create_segment(dir: &Path, first: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first));
    let f = private_file_options()
        .append(true)
        .create(true)
        .open(&path)?;
    // The new name must survive a crash too, or recovery would not find the segment.
    File::open(dir)?.sync_all()?;
    Ok((f, path))
}

impl Wal {
    /// Opens (or recovers) the log in `dir` and starts its writer thread.
    pub(crate) fn open(dir: &Path) -> io::Result<Wal> {
        Self::open_with_cap(dir, MEMORY_RECORDS)
    }

    /// Like [`Wal::open`], keeping at most `cap` undelivered records in memory.
    pub(crate) fn open_with_cap(dir: &Path, cap: usize) -> io::Result<Wal> {
        create_private_dir(dir)?;
        let cap = cap.max(1);
        let rec = recover(dir, cap)?;
        let next = rec.max_seq + 1;
        let mut segments = rec.segments;
        let (file, path) = create_segment(dir, next)?;
        segments.push((next, path));
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                pending: rec.pending.into_iter().map(Arc::new).collect(),
                total: rec.total,
                spilled: rec.spilled,
                next_seq: next,
                cap,
                acked: rec.acked,
                segments,
                renames: Vec::new(),
            }),
            appended: Notify::new(),
        });
        shared.compact()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("polaris-wal".into())
            .spawn(move || writer(writer_shared, rx, file, next))?;
        Ok(Wal { shared, tx })
    }

    /// Appends `items` durably; returns their sequence numbers once they are synced.
    pub(crate) async fn append(&self, items: Vec<Append>) -> io::Result<Vec<u64>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteReq { items, reply })
            .map_err(|_| io::Error::other("the WAL writer has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the WAL writer has stopped"))?
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` pending records from the front that go to the same session.
    pub(crate) fn next_batch(&self, max: usize) -> Vec<Arc<WalRecord>> {
        let inner = self.lock();
        let mut out: Vec<Arc<WalRecord>> = Vec::new();
        for r in &inner.pending {
            if out.len() >= max {
                break;
            }
            if let Some(first) = out.first()
                && (first.project != r.project || first.session != r.session)
            {
                break;
            }
            out.push(r.clone());
        }
        out
    }

    /// Records not yet acknowledged (in memory and on disk only).
    pub(crate) fn pending_len(&self) -> usize {
        self.lock().total
    }

    /// Whether records wait on disk and memory has room for them.
    pub(crate) fn needs_refill(&self) -> bool {
        let inner = self.lock();
        inner.spilled.is_some() && inner.pending.len() <= inner.cap / 2
    }

    /// Reads records that wait on disk only back into memory, up to the cap. Blocking.
    pub(crate) fn refill(&self) -> io::Result<()> {
        let (from, segments, room, synced) = {
            let inner = self.lock();
            let Some(from) = inner.spilled else {
                return Ok(());
            };
            (
                from,
                inner.segments.clone(),
                inner.cap.saturating_sub(inner.pending.len()),
                inner.next_seq,
            )
        };
        let mut loaded = Vec::new();
        scan_records(&segments, from, |r| {
            loaded.push(r);
            loaded.len() < room
        })?;
        let capped = loaded.len() >= room;
        let mut inner = self.lock();
        if inner.spilled != Some(from) {
            return Ok(());
        }
        let mut next = from;
        for mut r in loaded {
            if r.seq < next {
                continue;
            }
            next = r.seq + 1;
            for (old, new) in &inner.renames {
                if r.project == *old {
                    r.project = new.clone();
                }
            }
            inner.pending.push_back(Arc::new(r));
        }
        // Everything synced before the read began was visible to it; only a record
        // synced meanwhile may still be on disk only.
        let resume = if capped { next } else { next.max(synced) };
        inner.spilled = (resume < inner.next_seq).then_some(resume);
        Ok(())
    }

    /// The highest record the floor has handled (delivered or refused for good).
    pub(crate) fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Marks everything up to `seq` acknowledged: forgets it, records the mark and
    /// deletes segments that hold nothing else.
    pub(crate) fn ack(&self, seq: u64) -> io::Result<()> {
        {
            let mut inner = self.lock();
            if seq <= inner.acked {
                return Ok(());
            }
            inner.acked = seq;
            while inner.pending.front().is_some_and(|r| r.seq <= seq) {
                inner.pending.pop_front();
                inner.total = inner.total.saturating_sub(1);
            }
        }
        // Written without fsync: a stale mark after a crash only means a few events are
        // resent, and the floor stores a resent id once.
        let tmp = self.dir.join("acked.tmp");
        {
            let mut f = private_file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(seq.to_string().as_bytes())?;
        }
        std::fs::rename(&tmp, self.dir.join("acked"))?;
        self.compact()
    }

    /// Rewrites records not yet delivered (a project renamed while they waited).
    pub(crate) fn retarget(&self, old_project: &str, new_project: &str) {
        let mut inner = self.lock();
        inner
            .renames
            .push((old_project.to_owned(), new_project.to_owned()));
        for r in inner.pending.iter_mut() {
            if r.project == old_project {
                let mut moved = (**r).clone();
                moved.project = new_project.to_owned();
                *r = Arc::new(moved);
            }
        }
    }

    fn compact(&self) -> io::Result<()> {
        let doomed: Vec<PathBuf> = {
            let mut inner = self.lock();
            let acked = inner.acked;
            let mut doomed = Vec::new();
            // Segment i holds seqs [first_i, first_{i+1}); the last is the writer's.
            while inner.segments.len() > 1 && inner.segments[1].0 <= acked + 1 {
                doomed.push(inner.segments.remove(0).1);
            }
            doomed
        };
        for p in doomed {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The writer thread: group commit. Blocking file work stays off the async runtime.
fn writer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<WriteReq>,
    mut file: File,
    mut next: u64,
) {
    let mut size = 0u64;
    let mut buf = Vec::with_capacity(1 << 20);
    while let Some(first) = rx.blocking_recv() {
        let mut reqs = vec![first];
        while let Ok(more) = rx.try_recv() {
            reqs.push(more);
        }
        if size >= SEGMENT_BYTES {
            match create_segment(&shared.dir, next) {
                Ok((f, path)) => {
                    file = f;
                    size = 0;
                    shared.lock().segments.push((next, path));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a new WAL segment");
                    fail_all(reqs, &e);
                    continue;
                }
            }
        }
        buf.clear();
        let mut records = Vec::new();
        let mut answers = Vec::with_capacity(reqs.len());
        let mut seq = next;
        for req in reqs {
            let mut seqs = Vec::with_capacity(req.items.len());
            let mut bad = None;
            for item in req.items {
                let rec = WalRecord {
                    seq,
                    project: item.project,
                    session: item.session,
                    open: item.open,
                    body: item.body,
                };
                let start = buf.len();
                match serde_json::to_writer(&mut buf, &rec) {
                    Ok(()) => {
                        buf.push(b'\n');
                        seqs.push(seq);
                        seq += 1;
                        records.push(Arc::new(rec));
                    }
                    Err(e) => {
                        buf.truncate(start);
                        bad = Some(e);
                    }
                }
            }
            answers.push((req.reply, seqs, bad));
        }
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                size += buf.len() as u64;
                next = seq;
                {
                    let mut inner = shared.lock();
                    inner.next_seq = seq;
                    inner.total += records.len();
                    for r in records {
                        // Once one record waits on disk only, all later ones do too, so
                        // memory always holds the oldest, in order.
                        if inner.spilled.is_none() && inner.pending.len() < inner.cap {
                            inner.pending.push_back(r);
                        } else if inner.spilled.is_none() {
                            inner.spilled = Some(r.seq);
                        }
                    }
                }
                shared.appended.notify_one();
                for (reply, seqs, bad) in answers {
                    let answer = match bad {
                        None => Ok(seqs),
                        Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    };
                    // The caller may have gone away (client disconnected); the event is
                    // durable either way.
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL write failed; nothing in this batch was accepted");
                // The file may hold part of the batch; start a fresh segment so that a
                // half-written line is never followed by good ones in the same file.
                // Records written before the failure may be replayed: the floor dedups ids.
                if let Ok((f, path)) = create_segment(&shared.dir, seq) {
                    file = f;
                    size = 0;
                    next = seq;
                    let mut inner = shared.lock();
                    inner.segments.push((seq, path));
                    inner.next_seq = seq;
                }
                for (reply, _, _) in answers {
                    // Nobody waiting is not an error here.
                    let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

fn fail_all(reqs: Vec<WriteReq>, e: &io::Error) {
    for r in reqs {
        // Nobody waiting is not an error here.
        let _ = r.reply.send(Err(io::Error::new(e.kind(), e.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(n: u64) -> NewEventBody {
        NewEventBody {
            traceparent: None,
            term: None,
            id: Some(uuid::Uuid::new_v4()),
            timestamp: Some(chrono::Utc::now()),
            source: None,
            sender: ParticipantId::parse("agent:claude").expect("participant"),
            payload: json!({"hook_event_name": "Stop", "session_id": "cc", "n": n}),
        }
    }

    fn item(n: u64) -> Append {
        Append {
            project: "p".into(),
            session: "s".into(),
            open: None,
            body: body(n),
        }
    }

    #[tokio::test]
    async fn recovers_after_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open");
        let seqs = wal
            .append((0..3).map(item).collect())
            .await
            .expect("append");
        assert_eq!(seqs, vec![1, 2, 3]);
        drop(wal);
        // A crash in the middle of the next write leaves half a line.
        let seg = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.to_string_lossy()
                    .ends_with("seg-00000000000000000001.jsonl")
            })
            .expect("segment");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open seg");
        f.write_all(br#"{"seq":4,"project":"p","sess"#)
            .expect("torn");
        drop(f);

        let wal = Wal::open(dir.path()).expect("reopen");
        let pending = wal.shared.next_batch(100);
        let ns: Vec<_> = pending
            .iter()
            .map(|r| r.body.payload["n"].clone())
            .collect();
        assert_eq!(ns, vec![json!(0), json!(1), json!(2)]);
        // New appends continue after the last whole record, in a new segment.
        assert_eq!(wal.append(vec![item(3)]).await.expect("append"), vec![4]);
        drop(wal);
        let again = recover(dir.path(), usize::MAX).expect("recover").pending;
        assert_eq!(
            again.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&seg).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn acknowledged_segments_are_deleted_and_not_resent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open");
        wal.append((0..5).map(item).collect()).await.expect("a");
        drop(wal);
        // A second run writes to a second segment.
        let wal = Wal::open(dir.path()).expect("reopen");
        wal.append((5..8).map(item).collect()).await.expect("b");
        let segs = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("ls")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("seg-"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(segs(dir.path()).len(), 2, "{:?}", segs(dir.path()));
        // Acknowledging part of the first segment keeps it.
        wal.shared.ack(3).expect("ack");
        assert_eq!(segs(dir.path()).len(), 2);
        assert_eq!(wal.shared.pending_len(), 5);
        // All of it: gone.
        wal.shared.ack(5).expect("ack");
        assert_eq!(wal.shared.pending_len(), 3);
        wal.shared.ack(6).expect("ack");
        assert_eq!(
            segs(dir.path()),
            vec!["seg-00000000000000000006.jsonl".to_owned()]
        );
        drop(wal);
        let rec = recover(dir.path(), usize::MAX).expect("recover");
        assert_eq!(
            rec.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![7, 8]
        );
    }

    #[tokio::test]
    async fn a_backlog_beyond_memory_waits_on_disk_and_comes_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open_with_cap(dir.path(), 4).expect("open");
        for chunk in 0..3 {
            wal.append((chunk * 4..chunk * 4 + 4).map(item).collect())
                .await
                .expect("append");
        }
        assert_eq!(wal.shared.pending_len(), 12);
        assert_eq!(
            wal.shared.next_batch(100).len(),
            4,
            "only the cap in memory"
        );
        // Deliver two, then restart: the rest is still on disk.
        let mut delivered = Vec::new();
        let batch = wal.shared.next_batch(2);
        delivered.extend(batch.iter().map(|r| r.seq));
        wal.shared.ack(batch[1].seq).expect("ack");
        drop(wal);
        let wal = Wal::open_with_cap(dir.path(), 4).expect("reopen");
        assert_eq!(wal.shared.pending_len(), 10);
        wal.append(vec![item(12)]).await.expect("append");
        // Drain the way the uplink does, reading back from disk as the front empties.
        loop {
            if wal.shared.needs_refill() {
                wal.shared.refill().expect("refill");
            }
            let batch = wal.shared.next_batch(3);
            let Some(last) = batch.last() else { break };
            delivered.extend(batch.iter().map(|r| r.seq));
            wal.shared.ack(last.seq).expect("ack");
        }
        assert_eq!(delivered, (1..=13).collect::<Vec<_>>());
        assert_eq!(wal.shared.pending_len(), 0);
    }

    #[tokio::test]
    async fn concurrent_appends_share_syncs_and_keep_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open");
        let mut tasks = Vec::new();
        for n in 0..200 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move { wal.append(vec![item(n)]).await }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.extend(t.await.expect("join").expect("append"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let batch = wal.shared.next_batch(1000);
        assert_eq!(
            batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=200).collect::<Vec<_>>()
        );
    }
}
