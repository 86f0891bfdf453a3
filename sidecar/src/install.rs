//! `polaris install` / `polaris uninstall`: connect Claude Code to the sidecar, and undo it.
//!
//! Install adds to Claude Code's `settings.json` one `polaris hook` command for each of
//! `UserPromptSubmit`, `Stop`, `PreToolUse` and `PostToolUse`, a status line (only where the
//! user has none), and the `polaris` MCP server to `~/.claude.json`. It merges: the user's
//! own entries stay where they are, unknown keys and key order are kept, and a second run
//! changes nothing. The local secret stays in its own file; no file written here ever holds
//! it. Our entries are recognised by their command (this binary's path plus ` hook`), so
//! uninstall removes exactly those, wherever they sit, and leaves everything else.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use polaris_config::Env;
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

/// The MCP server's name in `~/.claude.json`.
const MCP_NAME: &str = "polaris";

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

    /// Whether `command` is one of ours: an absolute path to a `polaris` binary plus
    /// ` hook`, whatever follows. Another build's path counts too, so that installing from
    /// a moved or rebuilt binary updates its entries instead of adding a second set (every
    /// event would go twice), and uninstall removes them.
    fn is_ours(&self, command: &str) -> bool {
        let Some((exe, rest)) = first_word(command) else {
            return false;
        };
        is_polaris_path(&exe)
            && rest
                .strip_prefix(" hook")
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
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

    let hooks = object_at(&mut settings.root, "hooks", &opts.settings)?;
    let command = opts.hook_command();
    let (mut added, mut present, mut updated) = (Vec::new(), Vec::new(), Vec::new());
    for (event, matcher) in HOOK_EVENTS {
        let groups = array_at(hooks, event, &opts.settings, "hooks.")?;
        if groups
            .iter()
            .any(|g| group_commands(g).any(|c| c == command))
        {
            present.push(event);
            continue;
        }
        // Another build's (or home's) entry: point it here, where it stands.
        if let Some(old) = groups
            .iter_mut()
            .filter_map(|g| g.get_mut("hooks")?.as_array_mut())
            .flatten()
            .filter_map(|h| h.get_mut("command"))
            .find(|c| c.as_str().is_some_and(|c| opts.is_ours(c)))
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
        }
        Some(Some(c)) if c == statusline => report.push("status line: already there".into()),
        Some(Some(c)) if opts.is_ours(&c) => {
            if let Some(Value::Object(s)) = settings.root.get_mut("statusLine") {
                s.insert("command".into(), Value::String(statusline));
            }
            report.push("status line: updated".into());
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
                        .is_some_and(|c| opts.is_ours(c))
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

    let ours = settings
        .root
        .get("statusLine")
        .and_then(|s| s.get("command"))
        .and_then(Value::as_str)
        .is_some_and(|c| opts.is_ours(c));
    if ours {
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
    report.push(format!(
        "kept: the local secret and everything in {} (the sidecar's)",
        opts.home.root().display()
    ));
    Ok(report)
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

    #[test]
    fn commands_quote_paths_and_recognise_only_ours() {
        let o = opts("/usr/local/bin/polaris", false);
        assert_eq!(o.hook_command(), "/usr/local/bin/polaris hook");
        assert_eq!(
            o.statusline_command(),
            "/usr/local/bin/polaris hook --statusline"
        );
        assert!(o.is_ours("/usr/local/bin/polaris hook"));
        assert!(o.is_ours("/usr/local/bin/polaris hook --statusline"));
        assert!(!o.is_ours("/usr/local/bin/polaris hooker"));
        assert!(
            o.is_ours("/other/polaris hook --home /x"),
            "another build's"
        );
        assert!(!o.is_ours("polaris hook"), "not an absolute path");
        assert!(!o.is_ours("/usr/local/bin/notpolaris hook"));
        assert!(!o.is_ours("echo /usr/local/bin/polaris hook"));

        let o = opts("/Users/A B/it's/polaris", true);
        assert_eq!(
            o.hook_command(),
            r"'/Users/A B/it'\''s/polaris' hook --home '/h/my home'"
        );
        assert!(o.is_ours(&o.hook_command()));
        assert!(o.is_ours(&o.statusline_command()));
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
