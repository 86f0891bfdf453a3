//! Rebuilds a `Stop` hook's response from Claude Code's transcript (reference 5.3).
//!
//! Older Claude Code versions send no response text with `Stop`, so the hook reads the
//! session's JSONL transcript: everything after the last real human prompt is the turn. The
//! file is read backwards, in growing blocks, and only as far as that prompt, so a long
//! session costs the last turn, not the whole history. Nothing here fails the hook: an
//! unreadable file or a broken line only means less text.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Map, Value};

/// How many characters of a tool's command, path or pattern its quote shows.
const SUMMARY_CHARS: usize = 80;
/// The first block read from the end of the transcript.
const FIRST_BLOCK: usize = 64 * 1024;
/// The most `raw_turn` may weigh, serialised. The floor refuses bodies over its limit
/// (1 MiB by default) for good, which would lose the response text with the raw entries;
/// so the oldest entries of a heavy turn are left out and counted in `raw_turn_omitted`.
pub const RAW_TURN_BUDGET: usize = 512 * 1024;

/// The turn rebuilt from a transcript.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Turn {
    /// The display text: assistant text and one quote line per tool use, joined by a blank
    /// line; `None` when the turn has no such part.
    pub response: Option<String>,
    /// The turn's assistant entries and tool results (user entries with array content),
    /// kept whole but with NUL and control characters removed from every string.
    pub raw_turn: Vec<Value>,
}

/// Completes a `Stop` payload in place: `stop_response` and `last_assistant_message` become
/// the rebuilt response (else the payload's own `last_assistant_message`, else nothing), and
/// `raw_turn` is attached when the turn has entries. Other payloads are left alone.
pub fn complete_stop(payload: &mut Map<String, Value>) {
    if payload.get("hook_event_name").and_then(Value::as_str) != Some("Stop") {
        return;
    }
    let fallback = payload
        .get("last_assistant_message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let turn = payload
        .get("transcript_path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .and_then(|p| read_turn(Path::new(p)).ok())
        .unwrap_or_default();
    if let Some(text) = turn.response.or(fallback) {
        payload.insert("stop_response".into(), Value::String(text.clone()));
        payload.insert("last_assistant_message".into(), Value::String(text));
    }
    let (raw_turn, omitted) = within_budget(turn.raw_turn, RAW_TURN_BUDGET);
    if !raw_turn.is_empty() {
        payload.insert("raw_turn".into(), Value::Array(raw_turn));
    }
    if omitted > 0 {
        payload.insert("raw_turn_omitted".into(), Value::from(omitted));
    }
}

/// The newest entries whose serialised sizes add up to at most `budget`, in order, and how
/// many older ones were left out.
fn within_budget(mut entries: Vec<Value>, budget: usize) -> (Vec<Value>, usize) {
    let mut used = 0usize;
    let mut keep_from = entries.len();
    for (i, e) in entries.iter().enumerate().rev() {
        let size = serde_json::to_vec(e).map_or(usize::MAX, |v| v.len() + 1);
        if used.saturating_add(size) > budget {
            break;
        }
        used += size;
        keep_from = i;
    }
    let kept = entries.split_off(keep_from);
    (kept, entries.len())
}

/// Reads the last turn of the transcript at `path`.
pub fn read_turn(path: &Path) -> io::Result<Turn> {
    let mut file = File::open(path)?;
    let mut entries = Vec::new();
    let mut lines = ReverseLines::new(&mut file, FIRST_BLOCK)?;
    while let Some(line) = lines.next_line()? {
        // Unparsable lines (a torn last line, a future format) are skipped, not fatal.
        let Ok(entry) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if is_human_prompt(&entry) {
            break;
        }
        entries.push(entry);
    }
    entries.reverse();
    Ok(turn_of(entries))
}

/// Builds the turn from the entries after the last human prompt, in file order.
pub fn turn_of(entries: Vec<Value>) -> Turn {
    let mut parts = Vec::new();
    let mut raw_turn = Vec::new();
    for mut entry in entries {
        let kind = entry.get("type").and_then(Value::as_str).unwrap_or("");
        let content = entry.get("message").and_then(|m| m.get("content"));
        match kind {
            "assistant" => {
                display_parts(content, &mut parts);
                sanitise(&mut entry);
                raw_turn.push(entry);
            }
            "user" | "human" if content.is_some_and(Value::is_array) => {
                sanitise(&mut entry);
                raw_turn.push(entry);
            }
            _ => {}
        }
    }
    Turn {
        response: (!parts.is_empty()).then(|| parts.join("\n\n")),
        raw_turn,
    }
}

/// A real human prompt: a `user`/`human` entry whose content is a string (array content
/// is a tool result).
fn is_human_prompt(entry: &Value) -> bool {
    matches!(
        entry.get("type").and_then(Value::as_str),
        Some("user" | "human")
    ) && entry
        .get("message")
        .and_then(|m| m.get("content"))
        .is_some_and(Value::is_string)
}

/// The display parts of one assistant message: its non-empty texts and a quote per tool use.
fn display_parts(content: Option<&Value>, parts: &mut Vec<String>) {
    let items = match content {
        Some(Value::Array(items)) => items,
        // Some writers store a plain string; it is the text itself.
        Some(Value::String(s)) if !s.is_empty() => {
            parts.push(s.clone());
            return;
        }
        _ => return,
    };
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = item.get("text").and_then(Value::as_str)
                    && !t.is_empty()
                {
                    parts.push(t.to_owned());
                }
            }
            Some("tool_use") => {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    parts.push(tool_quote(name, item.get("input")));
                }
            }
            _ => {}
        }
    }
}

/// ``> _`<tool>`: <summary>_`` — the summary is the first 80 characters of the command,
/// else the file path, else the pattern, on one line.
fn tool_quote(name: &str, input: Option<&Value>) -> String {
    let summary = ["command", "file_path", "pattern"]
        .iter()
        .find_map(|k| input.and_then(|i| i.get(*k)).and_then(Value::as_str))
        .map(|s| {
            s.chars()
                .take(SUMMARY_CHARS)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
        });
    match summary {
        Some(s) => format!("> _`{name}`: {s}_"),
        None => format!("> _`{name}`_"),
    }
}

/// Removes NUL and the control characters JSONB and terminals choke on (0x00–0x08, 0x0B,
/// 0x0C, 0x0E–0x1F; tab, newline and carriage return stay) from every string and key.
pub fn sanitise(v: &mut Value) {
    match v {
        Value::String(s) if s.chars().any(is_stripped) => s.retain(|c| !is_stripped(c)),
        Value::Array(items) => items.iter_mut().for_each(sanitise),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(is_stripped)) {
                let old = std::mem::take(map);
                for (mut k, mut v) in old {
                    k.retain(|c| !is_stripped(c));
                    sanitise(&mut v);
                    map.insert(k, v);
                }
            } else {
                map.values_mut().for_each(sanitise);
            }
        }
        _ => {}
    }
}

fn is_stripped(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}')
}

/// The lines of a file from the last to the first, read in blocks from the end. A block
/// grows with the unfinished line it carries, so a very long line costs linear time.
struct ReverseLines<'a> {
    file: &'a mut File,
    /// Bytes of the file not yet read: `[0, pos)`.
    pos: u64,
    /// The start of the file's unread part up to the last newline found: the bytes of a
    /// line whose beginning is not read yet.
    carry: Vec<u8>,
    /// Complete lines found in the last block, last line first.
    ready: Vec<Vec<u8>>,
    /// The smallest block to read.
    block: usize,
}

impl<'a> ReverseLines<'a> {
    fn new(file: &'a mut File, block: usize) -> io::Result<Self> {
        let pos = file.seek(SeekFrom::End(0))?;
        Ok(ReverseLines {
            file,
            pos,
            carry: Vec::new(),
            ready: Vec::new(),
            block: block.max(1),
        })
    }

    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.ready.pop() {
                return Ok(Some(line));
            }
            if self.pos == 0 {
                // The first line of the file has no newline before it.
                if self.carry.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.carry)));
            }
            self.read_block()?;
        }
    }

    fn read_block(&mut self) -> io::Result<()> {
        let want = self.block.max(self.carry.len()) as u64;
        let n = want.min(self.pos);
        self.pos -= n;
        self.file.seek(SeekFrom::Start(self.pos))?;
        let len = usize::try_from(n).map_err(io::Error::other)?;
        let mut block = vec![0u8; len + self.carry.len()];
        self.file.read_exact(&mut block[..len])?;
        block[len..].copy_from_slice(&self.carry);
        // Split on newlines from the right; what is left of the first one carries over.
        let mut end = block.len();
        let mut found = Vec::new();
        while let Some(i) = block[..end].iter().rposition(|b| *b == b'\n') {
            let line = &block[i + 1..end];
            if !line.iter().all(u8::is_ascii_whitespace) {
                found.push(line.to_vec());
            }
            end = i;
        }
        block.truncate(end);
        self.carry = block;
        // `ready` is popped from the back: the nearest-to-start line must be at the front.
        found.reverse();
        self.ready = found;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn transcript(lines: &[String]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        for l in lines {
            writeln!(f, "{l}").expect("write");
        }
        f
    }

    fn user(text: &str) -> String {
        json!({"type": "user", "message": {"role": "user", "content": text}}).to_string()
    }

    fn assistant(content: Value) -> String {
        json!({"type": "assistant", "message": {"role": "assistant", "content": content}})
            .to_string()
    }

    fn tool_result(id: &str, out: &str) -> String {
        json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": out}
        ]}})
        .to_string()
    }

    #[test]
    fn the_turn_after_the_last_string_prompt_with_tool_quotes() {
        let long = "x".repeat(200);
        let f = transcript(&[
            user("an old prompt"),
            assistant(json!([{"type": "text", "text": "old answer"}])),
            user("fix the build"),
            assistant(json!([
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "cargo build\n--release"}}
            ])),
            tool_result("t1", "ok"),
            assistant(json!([
                {"type": "tool_use", "id": "t2", "name": "Edit", "input": {"file_path": "/src/a.rs"}},
                {"type": "tool_use", "id": "t3", "name": "Grep", "input": {"pattern": long}},
                {"type": "tool_use", "id": "t4", "name": "TodoWrite", "input": {}},
                {"type": "text", "text": ""},
                {"type": "thinking", "thinking": "hidden"}
            ])),
            tool_result("t2", "done"),
            assistant(json!([{"type": "text", "text": "Fixed."}])),
        ]);
        let turn = read_turn(f.path()).expect("read");
        let expected = [
            "Looking.".to_string(),
            "> _`Bash`: cargo build --release_".to_string(),
            "> _`Edit`: /src/a.rs_".to_string(),
            format!("> _`Grep`: {}_", "x".repeat(80)),
            "> _`TodoWrite`_".to_string(),
            "Fixed.".to_string(),
        ]
        .join("\n\n");
        assert_eq!(turn.response.as_deref(), Some(expected.as_str()));
        // Three assistant entries and two tool results, in file order; no prompt.
        let kinds: Vec<&str> = turn
            .raw_turn
            .iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(
            kinds,
            ["assistant", "user", "assistant", "user", "assistant"]
        );
        assert_eq!(
            turn.raw_turn[1]["message"]["content"][0]["tool_use_id"],
            "t1"
        );
    }

    #[test]
    fn unparsable_lines_are_skipped_and_no_prompt_means_the_whole_file() {
        let f = transcript(&[
            "{not json".to_string(),
            assistant(json!([{"type": "text", "text": "one"}])),
            String::new(),
            "garbage".to_string(),
            json!({"type": "summary", "summary": "s"}).to_string(),
            assistant(json!([{"type": "text", "text": "two"}])),
            "{\"type\": \"assistant\", \"message\": {\"content\": [{\"type\": \"text\", \"te"
                .to_string(),
        ]);
        let turn = read_turn(f.path()).expect("read");
        assert_eq!(turn.response.as_deref(), Some("one\n\ntwo"));
        assert_eq!(turn.raw_turn.len(), 2);
    }

    #[test]
    fn raw_turn_loses_nul_and_control_characters_but_keeps_whitespace() {
        let f = transcript(&[
            user("go"),
            assistant(json!([{"type": "text", "text": "a\u{0}b\u{1}c\td\ne\u{1f}\u{b}\u{c}f"}])),
            json!({"type": "user", "message": {"content": [
                {"type": "tool_result", "content": "bin\u{0}ary", "k\u{0}ey": "v"}
            ]}})
            .to_string(),
        ]);
        let turn = read_turn(f.path()).expect("read");
        assert_eq!(
            turn.raw_turn[0]["message"]["content"][0]["text"],
            "abc\td\nef"
        );
        assert_eq!(
            turn.raw_turn[1]["message"]["content"][0]["content"],
            "binary"
        );
        assert_eq!(turn.raw_turn[1]["message"]["content"][0]["key"], "v");
        let text = serde_json::to_string(&turn.raw_turn).expect("ser");
        assert!(!text.contains("\\u0000"), "{text}");
    }

    #[test]
    fn lines_longer_than_a_block_and_files_without_a_final_newline() {
        // A tool result far larger than the first block, and no newline after the last line.
        let big = "y".repeat(FIRST_BLOCK * 3 + 17);
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        write!(
            f,
            "{}\n{}\n{}\n{}",
            user("prompt"),
            tool_result("t", &big),
            assistant(json!([{"type": "text", "text": big}])),
            assistant(json!([{"type": "text", "text": "end"}]))
        )
        .expect("write");
        let turn = read_turn(f.path()).expect("read");
        assert_eq!(turn.raw_turn.len(), 3);
        assert_eq!(turn.response, Some(format!("{big}\n\nend")));
    }

    #[test]
    fn reverse_lines_match_the_file_for_every_block_size() {
        // Lines of many lengths (empty ones included), with and without a final newline.
        let lines: Vec<String> = (0..60).map(|i| "ab".repeat((i * 7) % 23)).collect();
        for final_newline in [true, false] {
            let mut text = lines.join("\n");
            if final_newline {
                text.push('\n');
            }
            let mut f = tempfile::NamedTempFile::new().expect("temp");
            f.write_all(text.as_bytes()).expect("write");
            let expected: Vec<&str> = lines
                .iter()
                .rev()
                .map(String::as_str)
                .filter(|l| !l.is_empty())
                .collect();
            for block in [1, 2, 3, 7, 16, 100, 4096] {
                let mut file = File::open(f.path()).expect("open");
                let mut r = ReverseLines::new(&mut file, block).expect("reader");
                let mut got = Vec::new();
                while let Some(l) = r.next_line().expect("line") {
                    got.push(String::from_utf8(l).expect("utf8"));
                }
                assert_eq!(
                    got, expected,
                    "block {block}, final newline {final_newline}"
                );
            }
        }
    }

    #[test]
    fn stop_payload_completion_and_fallback() {
        let f = transcript(&[
            user("q"),
            assistant(json!([{"type": "text", "text": "from transcript"}])),
        ]);
        let mut p = json!({"hook_event_name": "Stop", "session_id": "s",
            "transcript_path": f.path(), "last_assistant_message": "from claude"});
        let map = p.as_object_mut().expect("object");
        complete_stop(map);
        assert_eq!(map["stop_response"], "from transcript");
        assert_eq!(map["last_assistant_message"], "from transcript");
        assert_eq!(map["raw_turn"].as_array().map(Vec::len), Some(1));

        // No readable transcript: Claude Code's own last_assistant_message is the response.
        let mut p = json!({"hook_event_name": "Stop", "session_id": "s",
            "transcript_path": "/nonexistent/t.jsonl", "last_assistant_message": "from claude"});
        let map = p.as_object_mut().expect("object");
        complete_stop(map);
        assert_eq!(map["stop_response"], "from claude");
        assert_eq!(map["last_assistant_message"], "from claude");
        assert!(!map.contains_key("raw_turn"));

        // A transcript whose turn has no text keeps the fallback too.
        let g = transcript(&[user("q"), assistant(json!([{"type": "thinking"}]))]);
        let mut p = json!({"hook_event_name": "Stop", "session_id": "s",
            "transcript_path": g.path(), "last_assistant_message": "said"});
        let map = p.as_object_mut().expect("object");
        complete_stop(map);
        assert_eq!(map["stop_response"], "said");

        // Neither: nothing invented.
        let mut p = json!({"hook_event_name": "Stop", "session_id": "s"});
        let map = p.as_object_mut().expect("object");
        complete_stop(map);
        assert!(!map.contains_key("stop_response"));

        // Other hooks are untouched.
        let mut p = json!({"hook_event_name": "UserPromptSubmit", "transcript_path": f.path()});
        let before = p.clone();
        complete_stop(p.as_object_mut().expect("object"));
        assert_eq!(p, before);
    }

    #[test]
    fn a_heavy_turn_keeps_its_newest_raw_entries_within_the_budget() {
        let big = "z".repeat(RAW_TURN_BUDGET / 3);
        let f = transcript(&[
            user("q"),
            tool_result("t1", &big),
            tool_result("t2", &big),
            tool_result("t3", &big),
            assistant(json!([{"type": "text", "text": "done"}])),
        ]);
        let mut p = json!({"hook_event_name": "Stop", "session_id": "s",
            "transcript_path": f.path()});
        let map = p.as_object_mut().expect("object");
        complete_stop(map);
        let raw = map["raw_turn"].as_array().expect("raw_turn");
        assert_eq!(raw.len(), 3, "t2, t3 and the answer fit; t1 does not");
        assert_eq!(raw[0]["message"]["content"][0]["tool_use_id"], "t2");
        assert_eq!(map["raw_turn_omitted"], 1);
        assert!(serde_json::to_vec(&map["raw_turn"]).expect("ser").len() <= RAW_TURN_BUDGET);
        assert_eq!(map["stop_response"], "done");

        let (kept, omitted) = within_budget(vec![json!("a"), json!("b")], 1000);
        assert_eq!((kept.len(), omitted), (2, 0));
    }

    #[test]
    fn human_typed_entries_count_as_prompts() {
        let f = transcript(&[
            assistant(json!([{"type": "text", "text": "before"}])),
            json!({"type": "human", "message": {"content": "hi"}}).to_string(),
            assistant(json!("plain string answer")),
        ]);
        let turn = read_turn(f.path()).expect("read");
        assert_eq!(turn.response.as_deref(), Some("plain string answer"));
        assert_eq!(turn.raw_turn.len(), 1);
    }
}
