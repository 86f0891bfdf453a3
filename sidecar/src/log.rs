//! The JSONL log: `logs/daemon-YYYY-MM-DD.jsonl` (UTC date), one line per `/connect`,
//! `/events` and `/reply`, in the original's shape `{"t", "endpoint", "payload",
//! "response"?}` plus `"id"`, `"project"`, `"session"` and `"sender"` for routed events,
//! so `polaris recover` and `/backfill` can match lines to floor events by id.
//!
//! Secrets in payloads are redacted here (the WAL keeps the real payload: it is what gets
//! delivered). Lines go through one writer task so a request never waits on this file;
//! the log is a record, not the durability mechanism (that is the WAL).

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::home::{Home, create_private_dir, private_file_options};

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// When the sidecar received it (the event time for events).
    pub t: DateTime<Utc>,
    /// `/connect`, `/events` or `/reply`.
    pub endpoint: String,
    /// The request body, secrets redacted.
    pub payload: Value,
    /// What was answered, when it was not a plain success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// The event id, for routed events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Where the event went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Where the event went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who it was stamped as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// Every string in `v`, secrets replaced by `[REDACTED:<kind>]`.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(polaris_protocol::secrets::redact(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), redact(v))).collect()),
        other => other.clone(),
    }
}

/// The path of the log of `date`.
pub fn file_for(home: &Home, date: NaiveDate) -> PathBuf {
    home.logs_dir()
        .join(format!("daemon-{}.jsonl", date.format("%Y-%m-%d")))
}

/// A handle to the log writer.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::UnboundedSender<LogLine>,
}

impl Log {
    /// Starts the writer for `home`'s logs.
    pub fn start(home: &Home) -> io::Result<Log> {
        let dir = home.ensure_dir(Some(Path::new("logs")))?;
        create_private_dir(&dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let home = home.clone();
        std::thread::Builder::new()
            .name("polaris-log".into())
            .spawn(move || writer(home, rx))?;
        Ok(Log { tx })
    }

    /// Queues a line; the writer thread redacts its payload (off the request's path).
    pub fn write(&self, line: LogLine) {
        if self.tx.send(line).is_err() {
            tracing::warn!("the JSONL log writer has stopped; line not logged");
        }
    }
}

fn writer(home: Home, mut rx: mpsc::UnboundedReceiver<LogLine>) {
    let mut current: Option<(NaiveDate, io::BufWriter<std::fs::File>)> = None;
    while let Some(mut line) = rx.blocking_recv() {
        // Write whatever is queued, then flush once: one write call per burst.
        loop {
            write_line(&home, &mut current, line);
            match rx.try_recv() {
                Ok(next) => line = next,
                Err(_) => break,
            }
        }
        if let Some((_, w)) = current.as_mut()
            && let Err(e) = w.flush()
        {
            tracing::warn!(error = %e, "cannot write the JSONL log");
        }
    }
}

fn write_line(
    home: &Home,
    current: &mut Option<(NaiveDate, io::BufWriter<std::fs::File>)>,
    mut line: LogLine,
) {
    line.payload = redact(&line.payload);
    let date = Utc::now().date_naive();
    if current.as_ref().is_none_or(|(d, _)| *d != date) {
        if let Some((_, w)) = current.as_mut()
            && let Err(e) = w.flush()
        {
            tracing::warn!(error = %e, "cannot write the JSONL log");
        }
        match private_file_options()
            .append(true)
            .create(true)
            .open(file_for(home, date))
        {
            Ok(f) => *current = Some((date, io::BufWriter::with_capacity(1 << 16, f))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the JSONL log");
                *current = None;
                return;
            }
        }
    }
    if let Some((_, w)) = current.as_mut()
        && let Err(e) = serde_json::to_writer(&mut *w, &line)
            .map_err(io::Error::other)
            .and_then(|()| w.write_all(b"\n"))
    {
        tracing::warn!(error = %e, "cannot write the JSONL log");
    }
}

/// The lines of every daily log from `from`'s date to today, in order; bad lines skipped.
pub fn read_since(home: &Home, from: DateTime<Utc>) -> io::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    let mut day = from.date_naive();
    let today = Utc::now().date_naive();
    while day <= today {
        match std::fs::File::open(file_for(home, day)) {
            Ok(f) => {
                for line in io::BufReader::new(f).lines() {
                    if let Ok(l) = serde_json::from_str::<LogLine>(&line?) {
                        out.push(l);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match day.succ_opt() {
            Some(d) => day = d,
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_strings_anywhere() {
        let v = serde_json::json!({"prompt": "use key AKIAIOSFODNN7EXAMPLE now", "n": [1, "ok"]});
        let r = redact(&v);
        assert!(!r.to_string().contains("AKIAIOSFODNN7EXAMPLE"), "{r}");
        assert_eq!(r["n"], serde_json::json!([1, "ok"]));
    }
}
