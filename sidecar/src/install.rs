//! `polaris install` / `polaris uninstall`: connect Claude Code to the sidecar, and undo it.
//!
//! Install adds to Claude Code's `settings.json` one `polaris hook` command for each of
//! `UserPromptSubmit`, `Stop`, `PreToolUse` and `PostToolUse`, a status line (only where the
//! user has none), and the `polaris` MCP server to `~/.claude.json`. It merges: the user's
//! own entries stay where they are, unknown keys and key order are kept, and a second run
//! changes nothing. The local secret stays in its own file; no file written here ever holds
//! it.
//!
//! What install wrote into a settings file is kept in a record in the Polaris home
//! ([`RECORD_FILE`], mode 0600): the exact command of each hook and of the status line.
//! Uninstall removes those commands and nothing else, so a `polaris hook …` entry the user
//! wrote by hand stays. A settings file with no record was installed into by an older
//! build, if at all: then an entry is ours only if its command is exactly one an install
//! writes (a `polaris` binary's absolute path, ` hook`, and only the flags install adds).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use polaris_config::Env;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::home::{Home, create_private_dir, private_file_options};
use crate::secret;

/// The hooks install adds, with the matcher each takes (tool events match every tool).
const HOOK_EVENTS: [(&str, Option<&str>); 4] = [
    ("UserPromptSubmit", None),
    ("Stop", None),
    ("PreToolUse", Some("*")),
    ("PostToolUse", Some("*")),
];

/// The record of what install wrote, in the Polaris home.
pub const RECORD_FILE: &str = "install-record.json";

/// The MCP server's name in `~/.claude.json`.
const MCP_NAME: &str = "polaris";

/// The `/polaris` skill Claude Code shows as a slash command (the original's sub-commands,
/// mapped to the MCP tools).
pub const SKILL: &str = include_str!("polaris-skill.md");
/// The line that marks a skill file as install's.
const SKILL_MARK: &str = "written by `polaris install`";

/// Where install writes, and what it writes there.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The absolute path of the `polaris` binary the hooks run.
    pub exe: PathBuf,
    /// Claude Code's user settings (`~/.claude/settings.json`).
    pub settings: PathBuf,
    /// Claude Code's user config holding `mcpServers` (`~/.claude.json`).
    pub claude_json: PathBuf,
    /// The sidecar's home (the secret is created there).
    pub home: Home,
    /// Whether the hooks and the MCP server must be told the home (`--home`,
    /// `POLARIS_HOME`): true unless it is the default `~/.polaris`.
    pub pass_home: bool,
}

impl InstallOptions {
    /// Resolves the defaults: Claude Code's files under `CLAUDE_CONFIG_DIR` if set, else
    /// `~/.claude/settings.json` and `~/.claude.json`; the home from `--home`,
    /// `POLARIS_HOME` or `~/.polaris`; the binary from the running process.
    pub fn resolve(
        exe: PathBuf,
        settings: Option<PathBuf>,
        claude_json: Option<PathBuf>,
        home: Option<&Path>,
        env: &Env,
    ) -> Result<InstallOptions, InstallError> {
        let user_home = env.home();
        let need_home = || {
            user_home.clone().ok_or_else(|| {
                InstallError::Usage(
                    "no home directory: set HOME, or pass --settings and --claude-json".into(),
                )
            })
        };
        let config_dir = env.get("CLAUDE_CONFIG_DIR").map(PathBuf::from);
        let settings = match (settings, &config_dir) {
            (Some(p), _) => p,
            (None, Some(d)) => d.join("settings.json"),
            (None, None) => need_home()?.join(".claude").join("settings.json"),
        };
        let claude_json = match (claude_json, &config_dir) {
            (Some(p), _) => p,
            (None, Some(d)) => d.join(".claude.json"),
            (None, None) => need_home()?.join(".claude.json"),
        };
        let resolved = Home::resolve(home, env).map_err(|e| InstallError::Usage(e.to_string()))?;
        let root = absolute(resolved.root())?;
        let default = user_home.map(|h| h.join(".polaris"));
        Ok(InstallOptions {
            exe: absolute(&exe)?,
            settings,
            claude_json,
            pass_home: default.as_deref() != Some(root.as_path()),
            home: Home::at(root),
        })
    }

    /// The command Claude Code runs for every hook.
    pub fn hook_command(&self) -> String {
        self.command_with(&[])
    }

    /// `skills/polaris/SKILL.md` beside the settings file (Claude Code's user skills).
    pub fn skill_file(&self) -> PathBuf {
        self.settings
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("skills")
            .join("polaris")
            .join("SKILL.md")
    }

    /// The status line command.
    pub fn statusline_command(&self) -> String {
        self.command_with(&["--statusline"])
    }

    fn command_with(&self, extra: &[&str]) -> String {
        let mut cmd = format!("{} hook", shell_quote(&self.exe.to_string_lossy()));
        for e in extra {
            cmd.push(' ');
            cmd.push_str(e);
        }
        if self.pass_home {
            cmd.push_str(" --home ");
            cmd.push_str(&shell_quote(&self.home.root().to_string_lossy()));
        }
        cmd
    }

    fn mcp_entry(&self) -> Value {
        let mut env = Map::new();
        if self.pass_home {
            env.insert(
                "POLARIS_HOME".into(),
                Value::String(self.home.root().to_string_lossy().into_owned()),
            );
        }
        serde_json::json!({
            "type": "stdio",
            "command": self.exe.to_string_lossy(),
            "args": ["mcp"],
            "env": env,
        })
    }
}

/// Why install or uninstall stopped; nothing was written when it did.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file is not valid JSON.
    #[error("{}:{line}:{column}: {message}; not changed", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// Valid JSON of a shape Claude Code would not accept either.
    #[error("{}: `{key}` {problem}; not changed", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The key path, e.g. `hooks.Stop`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something the command line or environment must supply is missing.
    #[error("{0}")]
    Usage(String),
}

/// Installs; returns the lines that tell the user what was done.
pub fn install(opts: &InstallOptions, env: &Env) -> Result<Vec<String>, InstallError> {
    // Read and check both files before writing anything, so a bad one changes nothing.
    let mut settings = JsonFile::load(&opts.settings)?;
    let mut claude = JsonFile::load(&opts.claude_json)?;
    let mut report = Vec::new();

    let mut record = Record::load(&opts.home)?;
    let key = record_key(&opts.settings)?;
    let before = record.settings.get(&key).cloned();
    let mut now = Installed::default();

    let hooks = object_at(&mut settings.root, "hooks", &opts.settings)?;
    let command = opts.hook_command();
    let (mut added, mut present, mut updated) = (Vec::new(), Vec::new(), Vec::new());
    for (event, matcher) in HOOK_EVENTS {
        now.hooks.insert(event.to_owned(), command.clone());
        let groups = array_at(hooks, event, &opts.settings, "hooks.")?;
        if groups
            .iter()
            .any(|g| group_commands(g).any(|c| c == command))
        {
            present.push(event);
            continue;
        }
        // What an earlier install wrote here (another build's path, another home): point
        // it here, where it stands, rather than add a second one (every event would go
        // twice).
        if let Some(old) = groups
            .iter_mut()
            .filter_map(|g| g.get_mut("hooks")?.as_array_mut())
            .flatten()
            .filter_map(|h| h.get_mut("command"))
            .find(|c| {
                c.as_str()
                    .is_some_and(|c| ours(before.as_ref(), Written::Hook(event), c))
            })
        {
            *old = Value::String(command.clone());
            updated.push(event);
            continue;
        }
        let mut group = Map::new();
        if let Some(m) = matcher {
            group.insert("matcher".into(), Value::String(m.into()));
        }
        group.insert(
            "hooks".into(),
            serde_json::json!([{"type": "command", "command": command}]),
        );
        groups.push(Value::Object(group));
        added.push(event);
    }
    let mut line = format!("hooks in {}: ", opts.settings.display());
    if !added.is_empty() {
        let _ = write!(line, "added {}", added.join(", "));
    }
    for (what, events) in [("updated", &updated), ("already there", &present)] {
        if !events.is_empty() {
            let sep = if line.ends_with(": ") { "" } else { "; " };
            let _ = write!(line, "{sep}{what}: {}", events.join(", "));
        }
    }
    report.push(line);

    let statusline = opts.statusline_command();
    let current = settings
        .root
        .get("statusLine")
        .map(|s| s.get("command").and_then(Value::as_str).map(str::to_owned));
    match current {
        None => {
            settings.root.insert(
                "statusLine".into(),
                serde_json::json!({"type": "command", "command": statusline}),
            );
            report.push("status line: added".into());
            now.status_line = Some(statusline);
        }
        Some(Some(c)) if c == statusline => {
            report.push("status line: already there".into());
            now.status_line = Some(statusline);
        }
        Some(Some(c)) if ours(before.as_ref(), Written::StatusLine, &c) => {
            if let Some(Value::Object(s)) = settings.root.get_mut("statusLine") {
                s.insert("command".into(), Value::String(statusline.clone()));
            }
            report.push("status line: updated".into());
            now.status_line = Some(statusline);
        }
        Some(_) => report.push(format!(
            "status line: yours kept (to show Polaris there, run: {statusline})"
        )),
    }
    if let Some(old) = earlier_polaris_hooks(&settings.root) {
        report.push(format!(
            "warning: {} still has hooks of the earlier Polaris ({old}); remove them, or every \
             event is sent twice (and they hold the secret in plain text)",
            opts.settings.display()
        ));
    }

    let servers = object_at(&mut claude.root, "mcpServers", &opts.claude_json)?;
    let entry = opts.mcp_entry();
    match servers.get(MCP_NAME) {
        Some(v) if *v == entry => {
            report.push(format!(
                "MCP server in {}: already there",
                opts.claude_json.display()
            ));
        }
        existing => {
            let replaced = existing.is_some();
            servers.insert(MCP_NAME.into(), entry);
            report.push(format!(
                "MCP server in {}: {} \"{MCP_NAME}\" ({} mcp)",
                opts.claude_json.display(),
                if replaced { "replaced" } else { "added" },
                opts.exe.display()
            ));
        }
    }

    let secret_path = opts.home.secret_file();
    secret::load_or_create(&opts.home, env).map_err(|source| InstallError::Io {
        path: secret_path.clone(),
        source,
    })?;
    report.push(format!(
        "local secret: {} (mode 0600; the hooks read it from there, no settings file holds it)",
        secret_path.display()
    ));

    for f in [&settings, &claude] {
        if let Some(bak) = f.save()? {
            report.push(format!("your original is kept as {}", bak.display()));
        }
    }
    record.settings.insert(key, now);
    record.save(&opts.home)?;
    report.push(install_skill(&opts.skill_file())?);
    if opts.pass_home {
        report.push(format!("home: {}", opts.home.root().display()));
    }
    report.push(
        "next: start the sidecar (`polaris sidecar`), then in Claude Code type \
         `/polaris join #project`"
            .into(),
    );
    Ok(report)
}

/// Removes what install added; returns the lines that tell the user what was done.
pub fn uninstall(opts: &InstallOptions) -> Result<Vec<String>, InstallError> {
    let mut settings = JsonFile::load(&opts.settings)?;
    let mut claude = JsonFile::load(&opts.claude_json)?;
    let settings_bak = settings.original_backup();
    let claude_bak = claude.original_backup();
    let mut report = Vec::new();
    let mut record = Record::load(&opts.home)?;
    let key = record_key(&opts.settings)?;
    // Kept, emptied: from now on the record alone says what is ours in this file, so a
    // hand-written entry shaped like an older build's is not taken for one.
    let installed = record.settings.insert(key, Installed::default());

    let mut removed = 0usize;
    let mut hooks_emptied = false;
    if let Some(Value::Object(hooks)) = settings.root.get_mut("hooks") {
        let events: Vec<String> = hooks.keys().cloned().collect();
        for event in events {
            let Some(Value::Array(groups)) = hooks.get_mut(&event) else {
                continue;
            };
            let mut touched = false;
            groups.retain_mut(|g| {
                let Some(Value::Array(list)) = g.get_mut("hooks") else {
                    return true;
                };
                let n = list.len();
                list.retain(|h| {
                    !h.get("command")
                        .and_then(Value::as_str)
                        .is_some_and(|c| ours(installed.as_ref(), Written::Hook(&event), c))
                });
                if list.len() == n {
                    return true;
                }
                removed += n - list.len();
                touched = true;
                // A group we emptied was ours (install adds one group per event).
                !list.is_empty()
            });
            if touched && groups.is_empty() && !had(&settings_bak, &["hooks", &event]) {
                hooks.shift_remove(&event);
            }
        }
        hooks_emptied = removed > 0 && hooks.is_empty();
    }
    if hooks_emptied && !had(&settings_bak, &["hooks"]) {
        settings.root.shift_remove("hooks");
    }
    report.push(format!(
        "hooks in {}: removed {removed}",
        opts.settings.display()
    ));

    let status_line_ours = settings
        .root
        .get("statusLine")
        .and_then(|s| s.get("command"))
        .and_then(Value::as_str)
        .is_some_and(|c| ours(installed.as_ref(), Written::StatusLine, c));
    if status_line_ours {
        settings.root.shift_remove("statusLine");
        report.push("status line: removed".into());
    }

    let mut mcp_removed = false;
    if let Some(Value::Object(servers)) = claude.root.get_mut("mcpServers") {
        let ours = servers
            .get(MCP_NAME)
            .and_then(|s| s.get("command"))
            .and_then(Value::as_str)
            .is_some_and(is_polaris_path);
        if ours {
            servers.shift_remove(MCP_NAME);
            mcp_removed = true;
            if servers.is_empty() && !had(&claude_bak, &["mcpServers"]) {
                claude.root.shift_remove("mcpServers");
            }
        }
    }
    report.push(format!(
        "MCP server in {}: {}",
        opts.claude_json.display(),
        if mcp_removed {
            "removed"
        } else {
            "none of ours"
        }
    ));

    settings.save()?;
    claude.save()?;
    // Where there was nothing of ours and no record, no record (nor home) is made.
    if installed.is_some() || removed > 0 || status_line_ours {
        record.save(&opts.home)?;
    }
    report.push(uninstall_skill(&opts.skill_file())?);
    report.push(format!(
        "kept: the local secret and everything in {} (the sidecar's)",
        opts.home.root().display()
    ));
    Ok(report)
}

/// What install wrote into each settings file, kept in the Polaris home so that uninstall
/// removes exactly that. A file uninstalled from keeps an empty entry: the record, not the
/// shape of a command, decides there from then on.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// By the settings file's absolute path.
    settings: BTreeMap<String, Installed>,
}

/// What install wrote into one settings file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Installed {
    /// The command of the hook it added (or updated, or found) per event.
    hooks: BTreeMap<String, String>,
    /// The status line's command, if install set it (never the user's own).
    #[serde(rename = "statusLine")]
    status_line: Option<String>,
}

impl Record {
    fn path(home: &Home) -> PathBuf {
        home.root().join(RECORD_FILE)
    }

    /// The record, empty when there is none yet.
    fn load(home: &Home) -> Result<Record, InstallError> {
        let path = Record::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| InstallError::Parse {
                path,
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Record::default()),
            Err(source) => Err(InstallError::Io { path, source }),
        }
    }

    /// Writes the record, mode 0600.
    fn save(&self, home: &Home) -> Result<(), InstallError> {
        let path = Record::path(home);
        let io_err = |source| InstallError::Io {
            path: path.clone(),
            source,
        };
        home.ensure_dir(None).map_err(io_err)?;
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| io_err(io::Error::other(e)))?;
        text.push('\n');
        write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err)
    }
}

/// The key of a settings file in the record.
fn record_key(settings: &Path) -> Result<String, InstallError> {
    Ok(absolute(settings)?.to_string_lossy().into_owned())
}

/// Where a command sits in a settings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written<'a> {
    /// A hook of this event.
    Hook(&'a str),
    /// The status line.
    StatusLine,
}

/// Whether `command`, standing at `at`, is one install wrote: the one the record names
/// there, or — for a settings file an older build installed into, which kept no record —
/// exactly a command install writes for that place.
fn ours(installed: Option<&Installed>, at: Written<'_>, command: &str) -> bool {
    match (installed, at) {
        (Some(i), Written::Hook(event)) => i.hooks.get(event).is_some_and(|c| c == command),
        (Some(i), Written::StatusLine) => i.status_line.as_deref() == Some(command),
        (None, Written::Hook(event)) => {
            HOOK_EVENTS.iter().any(|(e, _)| *e == event)
                && install_command(command) == Some(Form::Hook)
        }
        (None, Written::StatusLine) => install_command(command) == Some(Form::StatusLine),
    }
}

/// The two commands install writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `<polaris> hook`.
    Hook,
    /// `<polaris> hook --statusline`.
    StatusLine,
}

/// Whether `command` is exactly what some build's install writes — `<polaris> hook`, or
/// `<polaris> hook --statusline`, either followed by ` --home <path>`, each path absolute
/// and quoted as [`shell_quote`] quotes it — and which of the two. A binary's path and
/// ` hook` followed by anything else is someone else's.
fn install_command(command: &str) -> Option<Form> {
    let (exe, rest) = first_word(command)?;
    if !is_polaris_path(&exe) {
        return None;
    }
    let rest = rest.strip_prefix(" hook")?;
    let (form, rest) = match rest.strip_prefix(" --statusline") {
        Some(r) => (Form::StatusLine, r),
        None => (Form::Hook, rest),
    };
    let home = match rest.strip_prefix(" --home ") {
        None if rest.is_empty() => None,
        None => return None,
        Some(h) => match first_word(h)? {
            (home, "") if Path::new(&home).is_absolute() => Some(home),
            _ => return None,
        },
    };
    // Rebuilt as install writes it: the same words quoted another way are not ours.
    let mut again = format!("{} hook", shell_quote(&exe));
    if form == Form::StatusLine {
        again.push_str(" --statusline");
    }
    if let Some(h) = home {
        again.push_str(" --home ");
        again.push_str(&shell_quote(&h));
    }
    (again == command).then_some(form)
}

/// Writes the `/polaris` skill unless the user has a skill of that name of their own.
fn install_skill(path: &Path) -> Result<String, InstallError> {
    let io = |source| InstallError::Io {
        path: path.to_owned(),
        source,
    };
    let verb = match std::fs::read_to_string(path) {
        Ok(text) if text == SKILL => return Ok("/polaris skill: already there".into()),
        Ok(text) if !text.contains(SKILL_MARK) => {
            return Ok(format!(
                "/polaris skill: yours kept ({}); the polaris_* tools work with it",
                path.display()
            ));
        }
        Ok(_) => "updated",
        Err(e) if e.kind() == io::ErrorKind::NotFound => "added",
        Err(e) => return Err(io(e)),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    write_atomic(path, SKILL.as_bytes(), 0o644).map_err(io)?;
    Ok(format!("/polaris skill: {verb} ({})", path.display()))
}

/// Removes the skill install wrote, if the user has not changed it since.
fn uninstall_skill(path: &Path) -> Result<String, InstallError> {
    let io = |source| InstallError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if text == SKILL => {
            std::fs::remove_file(path).map_err(io)?;
            // The directories install made for it go too, if nothing else is in them
            // (remove_dir refuses a directory that is not empty).
            for dir in path.ancestors().skip(1).take(2) {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
            Ok("/polaris skill: removed".into())
        }
        Ok(text) if text.contains(SKILL_MARK) => Ok(format!(
            "/polaris skill: kept ({} was edited since install)",
            path.display()
        )),
        Ok(_) => Ok("/polaris skill: none of ours".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok("/polaris skill: none of ours".into()),
        Err(e) => Err(io(e)),
    }
}

/// A JSON object file read whole, rewritten only if it changed.
struct JsonFile {
    path: PathBuf,
    /// The text as read; `None` when the file did not exist.
    text: Option<String>,
    /// The parsed top level at load time, to tell whether anything changed.
    loaded: Map<String, Value>,
    root: Map<String, Value>,
}

impl JsonFile {
    fn load(path: &Path) -> Result<JsonFile, InstallError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(InstallError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let root = match text.as_deref() {
            None => Map::new(),
            // An empty file is an empty configuration, as Claude Code treats it.
            Some(t) if t.trim().is_empty() => Map::new(),
            Some(t) => match serde_json::from_str::<Value>(t) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(InstallError::Shape {
                        path: path.into(),
                        key: "(top level)".into(),
                        problem: "is not a JSON object".into(),
                    });
                }
                Err(e) => {
                    return Err(InstallError::Parse {
                        path: path.into(),
                        line: e.line(),
                        column: e.column(),
                        message: e.to_string(),
                    });
                }
            },
        };
        Ok(JsonFile {
            path: path.into(),
            text,
            loaded: root.clone(),
            root,
        })
    }

    fn backup_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".bak");
        PathBuf::from(name)
    }

    /// The user's original as install first found it, if its backup is still there.
    fn original_backup(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.backup_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the file if it changed: a backup of the user's original once, then the new
    /// text to a temporary file that is synced and renamed over it. A file install created
    /// that ends up empty is removed. Returns the backup's path if this call made it.
    fn save(&self) -> Result<Option<PathBuf>, InstallError> {
        if self.root == self.loaded {
            return Ok(None);
        }
        let io_err = |source| InstallError::Io {
            path: self.path.clone(),
            source,
        };
        if self.root.is_empty() && !self.backup_path().exists() {
            // Nothing of the user's was ever in it (no original was backed up).
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
                _ => Ok(None),
            };
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(io_err)?;
        }
        let mode = file_mode(&self.path);
        let mut backup = None;
        if let Some(original) = &self.text {
            let bak = self.backup_path();
            if !bak.exists() {
                write_atomic(&bak, original.as_bytes(), mode).map_err(|source| {
                    InstallError::Io {
                        path: bak.clone(),
                        source,
                    }
                })?;
                backup = Some(bak);
            }
        }
        let mut text =
            serde_json::to_string_pretty(&self.root).map_err(|e| io_err(io::Error::other(e)))?;
        text.push('\n');
        write_atomic(&self.path, text.as_bytes(), mode).map_err(io_err)?;
        Ok(backup)
    }
}

/// The file's permission bits, to keep them on rewrite; 0600 for a new file.
fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            return m.permissions().mode() & 0o7777;
        }
    }
    let _ = path;
    0o600
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`,
/// so a crash leaves either the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".polaris-{}.tmp", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    };
    let result = (|| {
        let mut f = private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // The temporary file is ours and useless now; the error that matters is returned.
        let _ = std::fs::remove_file(&tmp);
    }
    #[cfg(not(unix))]
    let _ = mode;
    result
}

/// `root[key]` as an object, created empty if absent.
fn object_at<'a>(
    root: &'a mut Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, InstallError> {
    match root
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(m) => Ok(m),
        _ => Err(InstallError::Shape {
            path: path.into(),
            key: key.into(),
            problem: "is not a JSON object".into(),
        }),
    }
}

/// `map[key]` as an array, created empty if absent.
fn array_at<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    path: &Path,
    prefix: &str,
) -> Result<&'a mut Vec<Value>, InstallError> {
    match map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(a) => Ok(a),
        _ => Err(InstallError::Shape {
            path: path.into(),
            key: format!("{prefix}{key}"),
            problem: "is not a JSON array".into(),
        }),
    }
}

/// The commands of one matcher group.
fn group_commands(group: &Value) -> impl Iterator<Item = &str> {
    group
        .get("hooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|h| h.get("command").and_then(Value::as_str))
}

/// Whether the backed-up original had a value at `keys`.
fn had(original: &Option<Value>, keys: &[&str]) -> bool {
    let mut v = match original {
        Some(v) => v,
        None => return false,
    };
    for k in keys {
        match v.get(*k) {
            Some(next) => v = next,
            None => return false,
        }
    }
    true
}

/// A command of the original TypeScript Polaris's installer, if settings still hold one.
fn earlier_polaris_hooks(root: &Map<String, Value>) -> Option<String> {
    let hooks = root.get("hooks")?.as_object()?;
    hooks
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .flat_map(group_commands)
        .find(|c| c.contains("/.polaris/hooks/") || c.contains("POLARIS_DAEMON_SECRET="))
        .map(|c| {
            // Show where it points, never the secret it may carry.
            c.split_whitespace()
                .find(|w| w.contains("/.polaris/hooks/"))
                .unwrap_or("a hook with POLARIS_DAEMON_SECRET=…")
                .to_owned()
        })
}

/// The first word of a command as the shell reads it (plain, or single-quoted as
/// [`shell_quote`] writes it), and the rest.
fn first_word(command: &str) -> Option<(String, &str)> {
    let Some(mut rest) = command.strip_prefix('\'') else {
        let end = command.find(' ').unwrap_or(command.len());
        return Some((command[..end].to_owned(), &command[end..]));
    };
    let mut word = String::new();
    loop {
        let end = rest.find('\'')?;
        word.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix("\\''") {
            Some(r) => {
                word.push('\'');
                rest = r;
            }
            None => return Some((word, rest)),
        }
    }
}

/// An absolute path to a binary named `polaris`.
fn is_polaris_path(p: &str) -> bool {
    let p = Path::new(p);
    p.is_absolute() && p.file_name().is_some_and(|n| n == "polaris")
}

/// Quotes `s` for the shell Claude Code runs hook commands with, when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./,:@%+=".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: &Path) -> Result<PathBuf, InstallError> {
    std::path::absolute(p).map_err(|source| InstallError::Io {
        path: p.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(exe: &str, pass_home: bool) -> InstallOptions {
        InstallOptions {
            exe: exe.into(),
            settings: "/s/settings.json".into(),
            claude_json: "/s/.claude.json".into(),
            home: Home::at("/h/my home"),
            pass_home,
        }
    }

    /// Any command an install writes, for the hooks or the status line.
    fn is_ours(c: &str) -> bool {
        install_command(c).is_some()
    }

    #[test]
    fn commands_quote_paths_and_recognise_only_ours() {
        let o = opts("/usr/local/bin/polaris", false);
        assert_eq!(o.hook_command(), "/usr/local/bin/polaris hook");
        assert_eq!(
            o.statusline_command(),
            "/usr/local/bin/polaris hook --statusline"
        );
        assert!(is_ours("/usr/local/bin/polaris hook"));
        assert!(is_ours("/usr/local/bin/polaris hook --statusline"));
        assert!(!is_ours("/usr/local/bin/polaris hooker"));
        assert!(is_ours("/other/polaris hook --home /x"), "another build's");
        assert!(!is_ours("polaris hook"), "not an absolute path");
        assert!(!is_ours("/usr/local/bin/notpolaris hook"));
        assert!(!is_ours("echo /usr/local/bin/polaris hook"));
        // A user's own command that runs the hook: not a command install writes.
        for theirs in [
            "/usr/local/bin/polaris hook --something",
            "/usr/local/bin/polaris hook --home /x --verbose",
            "/usr/local/bin/polaris hook --home x",
            "/usr/local/bin/polaris hook --home",
            "/usr/local/bin/polaris hook  --statusline",
            "/usr/local/bin/polaris hook --statusline --statusline",
            "'/usr/local/bin/polaris' hook",
            "/usr/local/bin/polaris hook; rm -rf /tmp/x",
        ] {
            assert!(!is_ours(theirs), "{theirs}");
        }
        assert_eq!(
            install_command("/p/polaris hook --home /x"),
            Some(Form::Hook)
        );
        assert_eq!(
            install_command("/p/polaris hook --statusline --home /x"),
            Some(Form::StatusLine)
        );

        let o = opts("/Users/A B/it's/polaris", true);
        assert_eq!(
            o.hook_command(),
            r"'/Users/A B/it'\''s/polaris' hook --home '/h/my home'"
        );
        assert!(is_ours(&o.hook_command()));
        assert!(is_ours(&o.statusline_command()));
    }

    #[test]
    fn the_record_decides_once_there_is_one() {
        let installed = Installed {
            hooks: [("Stop".to_owned(), "/a/polaris hook".to_owned())].into(),
            status_line: None,
        };
        assert!(ours(
            Some(&installed),
            Written::Hook("Stop"),
            "/a/polaris hook"
        ));
        assert!(!ours(
            Some(&installed),
            Written::Hook("Stop"),
            "/b/polaris hook"
        ));
        assert!(!ours(
            Some(&installed),
            Written::Hook("PreToolUse"),
            "/a/polaris hook"
        ));
        assert!(!ours(
            Some(&installed),
            Written::StatusLine,
            "/a/polaris hook --statusline"
        ));
        // No record: an older build's exact commands, in the places it wrote them.
        assert!(ours(None, Written::Hook("Stop"), "/b/polaris hook"));
        assert!(!ours(
            None,
            Written::Hook("Notification"),
            "/b/polaris hook"
        ));
        assert!(!ours(
            None,
            Written::Hook("Stop"),
            "/b/polaris hook --statusline"
        ));
        assert!(ours(
            None,
            Written::StatusLine,
            "/b/polaris hook --statusline"
        ));
        assert!(!ours(None, Written::StatusLine, "/b/polaris hook"));
    }

    #[test]
    fn the_earlier_installers_hooks_are_found_without_showing_the_secret() {
        let root = serde_json::json!({"hooks": {"Stop": [{"hooks": [
            {"type": "command", "command": "POLARIS_DAEMON_SECRET=abc bun /u/.polaris/hooks/stop.ts"}
        ]}]}});
        let found = earlier_polaris_hooks(root.as_object().expect("object")).expect("found");
        assert_eq!(found, "/u/.polaris/hooks/stop.ts");
        assert!(!found.contains("abc"));
    }
}
