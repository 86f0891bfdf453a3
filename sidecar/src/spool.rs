//! The hook's spool: events `polaris hook` could not hand to the sidecar.
//!
//! One file per event, `<unix ms>-<id>.json`, written under a temporary name, synced and
//! renamed into place, so the sidecar never takes in half a file. The sidecar reads them in
//! name order (time order) on start and deletes each once it is in the write-ahead log.

use std::io::{self, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::home::{Home, create_private_dir, private_file_options};

/// One spooled event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The id the hook gave the event; the floor stores it under this id.
    pub id: Uuid,
    /// When the hook saw it.
    pub t: DateTime<Utc>,
    /// The sidecar route it was meant for (`/events`).
    pub endpoint: String,
    /// The hook payload, unchanged.
    pub payload: serde_json::Value,
}

/// Writes `entry` into the home's spool; returns the file's path.
pub fn write(home: &Home, entry: &SpoolEntry) -> io::Result<PathBuf> {
    let dir = home.spool_dir();
    create_private_dir(&dir)?;
    let name = format!(
        "{:013}-{}.json",
        entry.t.timestamp_millis().max(0),
        entry.id
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(&name);
    {
        let mut f = private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(entry).map_err(io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The spooled files, oldest first; temporary files are skipped.
pub fn list(home: &Home) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(home.spool_dir()) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !name.starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one spooled file.
pub fn read(path: &std::path::Path) -> io::Result<SpoolEntry> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_entries_come_back_oldest_first_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        let t0 = Utc::now();
        let later = SpoolEntry {
            id: Uuid::new_v4(),
            t: t0 + chrono::Duration::milliseconds(5),
            endpoint: "/events".into(),
            payload: serde_json::json!({"hook_event_name": "Stop", "session_id": "cc"}),
        };
        let first = SpoolEntry {
            t: t0,
            id: Uuid::new_v4(),
            ..later.clone()
        };
        write(&home, &later).expect("write");
        write(&home, &first).expect("write");
        // A temporary file left by a crash mid-write is not an entry.
        std::fs::write(home.spool_dir().join(".x.json.tmp"), b"{").expect("tmp");
        let files = list(&home).expect("list");
        let ids: Vec<Uuid> = files.iter().map(|p| read(p).expect("read").id).collect();
        assert_eq!(ids, vec![first.id, later.id]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0])
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
