//! `polaris recover`: puts back on the floor every event this machine's sidecar accepted
//! that the floor does not have.
//!
//! Two records say what was accepted: the JSONL log (`logs/daemon-*.jsonl`, every routed
//! `/events` and `/reply` with its event id, project, session and sender) and the
//! write-ahead log's undelivered records. Each event is looked up on the floor by id and
//! what is missing is resent through the batch route with its original id and time, so
//! running recover twice, or while the sidecar is also delivering, stores each event once.
//! A WAL record wins over a log line with the same id: the log's payload is redacted, the
//! WAL's is what was accepted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead};

use polaris_protocol::{NewEventBody, Source};
use polaris_registry::ParticipantId;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::home::Home;
use crate::log::LogLine;
use crate::uplink::{FloorClient, segment};
use crate::wal::{self, SessionOpen};

/// Events per floor read and per resend (the floor takes up to 1000 of each).
const PAGE: usize = 500;

/// What a run found and did. `scanned = present + restored + rejected + failed +
/// unroutable`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Distinct events found in the log and the WAL.
    pub scanned: usize,
    /// Already on the floor.
    pub present: usize,
    /// Resent and stored by the floor now.
    pub restored: usize,
    /// Resent and refused by the floor (4xx for that event).
    pub rejected: usize,
    /// Not resent: the floor could not be read or written for their session.
    pub failed: usize,
    /// Log lines with no event id, project or session (e.g. dropped as not connected).
    pub unroutable: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {}, present {}, restored {}, unroutable {}",
            self.scanned, self.present, self.restored, self.unroutable
        )?;
        if self.rejected > 0 {
            write!(f, ", rejected {}", self.rejected)?;
        }
        if self.failed > 0 {
            write!(f, ", failed {}", self.failed)?;
        }
        Ok(())
    }
}

/// An event to check, with where it goes.
#[derive(Debug, Clone)]
struct Candidate {
    project: String,
    session: String,
    open: Option<SessionOpen>,
    body: NewEventBody,
}

/// The event a routed log line stands for; `None` when the line is not routable.
fn from_log(line: LogLine) -> Option<Candidate> {
    let (id, project, session) = (line.id?, line.project?, line.session?);
    let sender = ParticipantId::parse(line.sender.as_deref()?).ok()?;
    let payload = if line.endpoint == "/reply" {
        // The log keeps the request; the floor got the Stop event the sidecar built of it.
        json!({
            "hook_event_name": "Stop",
            "session_id": line.payload.get("ccSessionId").cloned().unwrap_or(Value::Null),
            "stop_response": line.payload.get("message").cloned().unwrap_or(Value::Null),
        })
    } else {
        line.payload
    };
    // The log does not name the source; a hook payload names its hook.
    let source = if payload.get("hook_event_name").is_some() {
        Source::Hook
    } else if sender.is_agent() {
        Source::Agent
    } else {
        Source::Reply
    };
    Some(Candidate {
        project,
        session,
        open: None,
        body: NewEventBody {
            traceparent: None,
            term: None,
            id: Some(id),
            timestamp: Some(line.t),
            source: Some(source),
            sender,
            payload,
        },
    })
}

/// The log's `/events` and `/reply` lines, every file in name (date) order; lines that do
/// not parse are skipped. Returns the routable events and the count of unroutable lines.
fn read_logs(home: &Home) -> io::Result<(Vec<Candidate>, usize)> {
    let mut files = Vec::new();
    match std::fs::read_dir(home.logs_dir()) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("daemon-") && name.ends_with(".jsonl") {
                    files.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort();
    let (mut found, mut unroutable) = (Vec::new(), 0);
    for path in files {
        let f = std::fs::File::open(&path)?;
        for line in io::BufReader::new(f).lines() {
            let Ok(line) = serde_json::from_str::<LogLine>(&line?) else {
                continue;
            };
            if line.endpoint != "/events" && line.endpoint != "/reply" {
                continue;
            }
            match from_log(line) {
                Some(c) => found.push(c),
                None => unroutable += 1,
            }
        }
    }
    Ok((found, unroutable))
}

/// Checks every event of the log and the WAL against `floor` and resends what it lacks.
#[tracing::instrument(name = "recover", skip_all, fields(floor = floor.base()))]
pub async fn run(home: &Home, floor: &FloorClient) -> anyhow::Result<Report> {
    let (logged, unroutable) = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || read_logs(&home)).await??
    };
    let pending = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || wal::read_pending(&home)).await??
    };
    // One candidate per id; the WAL's copy replaces the log's.
    let mut by_id: HashMap<Uuid, Candidate> = HashMap::new();
    let mut order: Vec<Uuid> = Vec::new();
    let wal = pending.into_iter().filter_map(|r| {
        let id = r.body.id?;
        Some((
            id,
            Candidate {
                project: r.project,
                session: r.session,
                open: r.open,
                body: r.body,
            },
        ))
    });
    let log = logged.into_iter().filter_map(|c| Some((c.body.id?, c)));
    for (id, c) in wal.chain(log) {
        if let std::collections::hash_map::Entry::Vacant(slot) = by_id.entry(id) {
            order.push(id);
            slot.insert(c);
        }
    }
    let mut report = Report {
        scanned: by_id.len() + unroutable,
        unroutable,
        ..Report::default()
    };
    // Per session, in the order the events were accepted.
    let mut sessions: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
    for id in order {
        if let Some(c) = by_id.remove(&id) {
            sessions
                .entry((c.project.clone(), c.session.clone()))
                .or_default()
                .push(c);
        }
    }
    for ((project, session), mut events) in sessions {
        events.sort_by_key(|c| c.body.timestamp);
        let outcome = restore_session(floor, &project, &session, events).await;
        report.present += outcome.present;
        report.restored += outcome.restored;
        report.rejected += outcome.rejected;
        report.failed += outcome.failed;
    }
    Ok(report)
}

#[derive(Default)]
struct Outcome {
    present: usize,
    restored: usize,
    rejected: usize,
    failed: usize,
}

#[tracing::instrument(name = "recover.session", skip(floor, events), fields(events = events.len()))]
async fn restore_session(
    floor: &FloorClient,
    project: &str,
    session: &str,
    events: Vec<Candidate>,
) -> Outcome {
    let mut out = Outcome::default();
    let on_floor = match floor_ids(floor, project, session).await {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("polaris recover: {project}/{session}: reading the floor: {e}");
            out.failed = events.len();
            return out;
        }
    };
    let total = events.len();
    let missing: Vec<Candidate> = events
        .into_iter()
        .filter(|c| c.body.id.is_none_or(|id| !on_floor.contains(&id)))
        .collect();
    out.present = total - missing.len();
    if missing.is_empty() {
        return out;
    }
    let open = missing
        .iter()
        .find_map(|c| c.open.clone())
        .unwrap_or(SessionOpen {
            driver: None,
            agent: None,
        });
    if let Err(e) = floor.open_session(project, session, &open).await {
        eprintln!("polaris recover: {project}/{session}: creating the session: {e}");
        out.failed = missing.len();
        return out;
    }
    let path = format!(
        "/projects/{}/sessions/{}/events/batch",
        segment(project),
        segment(session)
    );
    for chunk in missing.chunks(PAGE) {
        let events: Vec<&NewEventBody> = chunk.iter().map(|c| &c.body).collect();
        let answer = floor
            .request(reqwest::Method::POST, &path)
            .json(&json!({ "events": events }))
            .send()
            .await;
        let results = match answer {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => {
                let st = r.status().as_u16();
                Err(format!("{st} {}", r.text().await.unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        };
        let results = match results {
            Ok(v) => v,
            Err(e) => {
                eprintln!("polaris recover: {project}/{session}: resending: {e}");
                out.failed += chunk.len();
                continue;
            }
        };
        let items = results["results"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in chunk.iter().enumerate() {
            match items.get(i).and_then(|r| r["status"].as_u64()) {
                Some(201) => out.restored += 1,
                // Stored meanwhile (the sidecar delivered it while we looked).
                Some(200) => out.present += 1,
                Some(st) => {
                    let err = items[i]["error"].as_str().unwrap_or_default();
                    let id = c.body.id.map(|u| u.to_string()).unwrap_or_default();
                    eprintln!(
                        "polaris recover: {project}/{session}: event {id} refused ({st}): {err}"
                    );
                    out.rejected += 1;
                }
                None => out.failed += 1,
            }
        }
    }
    out
}

/// The ids of every event of `project/session` on the floor; a missing project or session
/// has none.
async fn floor_ids(
    floor: &FloorClient,
    project: &str,
    session: &str,
) -> Result<HashSet<Uuid>, String> {
    #[derive(Deserialize)]
    struct Page {
        events: Vec<IdOnly>,
        next_after: i64,
        has_more: bool,
    }
    #[derive(Deserialize)]
    struct IdOnly {
        id: Uuid,
    }
    let mut ids = HashSet::new();
    let mut after = 0i64;
    loop {
        let path = format!(
            "/projects/{}/sessions/{}/events?after={after}&limit={PAGE}",
            segment(project),
            segment(session)
        );
        let r = floor
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(|e| format!("floor unreachable: {e}"))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(ids);
        }
        if !r.status().is_success() {
            let st = r.status().as_u16();
            return Err(format!("{st} {}", r.text().await.unwrap_or_default()));
        }
        let page: Page = r.json().await.map_err(|e| format!("bad page: {e}"))?;
        ids.extend(page.events.iter().map(|e| e.id));
        if !page.has_more || page.next_after <= after {
            return Ok(ids);
        }
        after = page.next_after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(v: Value) -> LogLine {
        serde_json::from_value(v).expect("log line")
    }

    #[test]
    fn a_reply_line_becomes_the_stop_event_the_sidecar_sent() {
        let id = Uuid::new_v4();
        let c = from_log(line(
            json!({"t": "2026-11-20T10:00:00.000Z", "endpoint": "/reply",
            "id": id, "project": "p", "session": "s", "sender": "agent:claude",
            "payload": {"ccSessionId": "cc", "message": "done"}}),
        ))
        .expect("routable");
        assert_eq!(c.body.id, Some(id));
        assert_eq!(c.body.source, Some(Source::Hook));
        assert_eq!(
            c.body.payload,
            json!({"hook_event_name": "Stop", "session_id": "cc", "stop_response": "done"})
        );
        assert!(polaris_protocol::validate::event(c.body).is_ok());
    }

    #[test]
    fn lines_without_a_route_are_unroutable() {
        let dropped = json!({"t": "2026-11-20T10:00:00.000Z", "endpoint": "/events",
            "payload": {"hook_event_name": "Stop", "session_id": "cc"}});
        assert!(from_log(line(dropped)).is_none());
        let bad_sender = json!({"t": "2026-11-20T10:00:00.000Z", "endpoint": "/events",
            "id": Uuid::new_v4(), "project": "p", "session": "s", "sender": "nobody",
            "payload": {}});
        assert!(from_log(line(bad_sender)).is_none());
    }

    #[test]
    fn the_summary_line_names_every_count() {
        let r = Report {
            scanned: 5,
            present: 1,
            restored: 2,
            rejected: 1,
            failed: 0,
            unroutable: 1,
        };
        assert_eq!(
            r.to_string(),
            "scanned 5, present 1, restored 2, unroutable 1, rejected 1"
        );
    }
}
