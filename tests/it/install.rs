//! `polaris install` / `polaris uninstall` on a user's real-looking Claude Code files: the
//! real binary, a temporary `HOME`, and the files compared as the user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn settings(&self) -> PathBuf {
        self.home().join(".claude").join("settings.json")
    }

    fn claude_json(&self) -> PathBuf {
        self.home().join(".claude.json")
    }

    fn polaris_home(&self) -> PathBuf {
        self.home().join(".polaris")
    }

    /// Runs `polaris <cmd> ARGS` with this world's `HOME` and the default Polaris home.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.home()).unwrap();
        Command::new(BIN)
            .arg(cmd)
            .args(args)
            .env_clear()
            .env("HOME", self.home())
            .output()
            .unwrap()
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(out.status.success(), "{cmd} failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The user's own settings: hooks for the same events, a matcher of theirs, other keys.
fn users_settings() -> Value {
    json!({
        "model": "opus",
        "hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}],
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "/u/guard.sh"}]},
                {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "/u/fmt.sh", "timeout": 30}]}
            ],
            "Notification": [{"hooks": [{"type": "command", "command": "notify-send hi"}]}]
        },
        "permissions": {"allow": ["Bash(ls:*)"]},
        "zzz_last": true
    })
}

fn users_claude_json() -> Value {
    json!({
        "numStartups": 12,
        "mcpServers": {"github": {"type": "stdio", "command": "gh-mcp", "args": [], "env": {}}},
        "projects": {"/w": {"allowedTools": []}}
    })
}

fn commands(settings: &Value, event: &str) -> Vec<String> {
    settings["hooks"][event]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["hooks"].as_array().unwrap().iter())
        .map(|h| h["command"].as_str().unwrap().to_owned())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn install_merges_with_the_users_settings_and_uninstall_restores_them() {
    let w = World::new();
    write_json(&w.settings(), &users_settings());
    write_json(&w.claude_json(), &users_claude_json());
    let original_settings = std::fs::read(w.settings()).unwrap();

    let said = w.ok("install", &[]);
    assert!(said.contains("/polaris join #project"), "{said}");
    assert!(
        said.contains(&format!("kept as {}.bak", w.settings().display())),
        "{said}"
    );
    assert!(said.contains("polaris sidecar"), "{said}");

    let hook = format!("{BIN} hook");
    let s = read_json(&w.settings());
    // Theirs first, untouched and in order; ours added after.
    assert_eq!(commands(&s, "Stop"), ["say done", hook.as_str()]);
    assert_eq!(
        commands(&s, "PreToolUse"),
        ["/u/guard.sh", "/u/fmt.sh", hook.as_str()]
    );
    assert_eq!(
        s["hooks"]["PreToolUse"][1],
        users_settings()["hooks"]["PreToolUse"][1]
    );
    assert_eq!(s["hooks"]["PreToolUse"][2]["matcher"], "*");
    assert_eq!(commands(&s, "PostToolUse"), [hook.as_str()]);
    assert_eq!(commands(&s, "UserPromptSubmit"), [hook.as_str()]);
    assert_eq!(
        s["hooks"]["Notification"],
        users_settings()["hooks"]["Notification"]
    );
    assert_eq!(
        keys(&s),
        ["model", "hooks", "permissions", "zzz_last", "statusLine"]
    );
    assert_eq!(
        keys(&s["hooks"]),
        [
            "Stop",
            "PreToolUse",
            "Notification",
            "UserPromptSubmit",
            "PostToolUse"
        ]
    );
    assert_eq!(
        s["statusLine"],
        json!({"type": "command", "command": format!("{BIN} hook --statusline")})
    );

    let c = read_json(&w.claude_json());
    assert_eq!(
        c["mcpServers"]["polaris"],
        json!({"type": "stdio", "command": BIN, "args": ["mcp"], "env": {}})
    );
    assert_eq!(
        c["mcpServers"]["github"],
        users_claude_json()["mcpServers"]["github"]
    );
    assert_eq!(keys(&c), ["numStartups", "mcpServers", "projects"]);

    // The secret exists, private, and no Claude Code file holds it.
    let secret = std::fs::read_to_string(w.polaris_home().join("daemon.secret")).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert_mode(&w.polaris_home().join("daemon.secret"), 0o600);
    for f in [w.settings(), w.claude_json()] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(secret.trim()),
            "{} holds the secret",
            f.display()
        );
    }
    // The user's original is kept once.
    let bak = PathBuf::from(format!("{}.bak", w.settings().display()));
    assert_eq!(std::fs::read(&bak).unwrap(), original_settings);

    // A second install adds nothing: the files are byte for byte the same.
    let (s1, c1) = (
        std::fs::read(w.settings()).unwrap(),
        std::fs::read(w.claude_json()).unwrap(),
    );
    let said = w.ok("install", &[]);
    assert!(said.contains("already there"), "{said}");
    assert_eq!(std::fs::read(w.settings()).unwrap(), s1);
    assert_eq!(std::fs::read(w.claude_json()).unwrap(), c1);
    assert_eq!(std::fs::read(&bak).unwrap(), original_settings);

    w.ok("uninstall", &[]);
    assert_eq!(read_json(&w.settings()), users_settings());
    assert_eq!(keys(&read_json(&w.settings())), keys(&users_settings()));
    assert_eq!(read_json(&w.claude_json()), users_claude_json());
}

#[test]
fn uninstall_keeps_what_the_user_changed_after_install() {
    let w = World::new();
    write_json(&w.settings(), &users_settings());
    w.ok("install", &[]);

    // The user edits after install: a new key, a hook of theirs beside ours, and ours moved.
    let mut s = read_json(&w.settings());
    s["theme"] = json!("dark");
    let user_hook = json!({"hooks": [{"type": "command", "command": "echo prompt"}]});
    let groups = s["hooks"]["UserPromptSubmit"].as_array_mut().unwrap();
    groups.insert(0, user_hook.clone());
    s["hooks"]["Stop"].as_array_mut().unwrap().reverse();
    write_json(&w.settings(), &s);

    w.ok("uninstall", &[]);
    let after = read_json(&w.settings());
    let mut expected = users_settings();
    expected["theme"] = json!("dark");
    expected["hooks"]["UserPromptSubmit"] = json!([user_hook]);
    assert_eq!(after, expected);
    let hook = format!("{BIN} hook");
    assert!(
        !std::fs::read_to_string(w.settings())
            .unwrap()
            .contains(&hook)
    );
}

#[test]
fn install_from_nothing_and_back_to_nothing() {
    let w = World::new();
    w.ok("install", &[]);
    assert!(w.settings().exists());
    assert!(w.claude_json().exists());
    w.ok("uninstall", &[]);
    // Everything install created is gone again, containers included.
    assert!(!w.settings().exists());
    assert!(!w.claude_json().exists());
}

#[test]
fn a_broken_settings_file_is_refused_with_its_position_and_left_alone() {
    let w = World::new();
    let broken = "{\n  \"model\": \"opus\",\n  \"hooks\": {\n    \"Stop\": [,]\n  }\n}\n";
    std::fs::create_dir_all(w.settings().parent().unwrap()).unwrap();
    std::fs::write(w.settings(), broken).unwrap();
    write_json(&w.claude_json(), &users_claude_json());
    let claude_before = std::fs::read(w.claude_json()).unwrap();

    let out = w.run("install", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:14", w.settings().display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(w.settings()).unwrap(), broken);
    assert_eq!(std::fs::read(w.claude_json()).unwrap(), claude_before);
    assert!(!w.polaris_home().join("daemon.secret").exists());

    let out = w.run("uninstall", &[]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(w.settings()).unwrap(), broken);

    // Valid JSON Claude Code could not read either is refused by name, too.
    write_json(
        &w.settings(),
        &json!({"hooks": {"Stop": {"not": "a list"}}}),
    );
    let out = w.run("install", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks.Stop"), "{err}");
}

#[test]
fn the_users_status_line_is_never_replaced() {
    let w = World::new();
    let theirs = json!({"type": "command", "command": "~/bin/my-status", "padding": 0});
    write_json(&w.settings(), &json!({"statusLine": theirs}));
    let said = w.ok("install", &[]);
    assert!(said.contains("status line: yours kept"), "{said}");
    assert_eq!(read_json(&w.settings())["statusLine"], theirs);
    w.ok("uninstall", &[]);
    assert_eq!(read_json(&w.settings()), json!({"statusLine": theirs}));
}

#[test]
fn explicit_paths_and_a_non_default_home_reach_the_commands() {
    let w = World::new();
    let settings = w.dir.path().join("cfg").join("s.json");
    let claude = w.dir.path().join("cfg").join("c.json");
    let home = w.dir.path().join("ph");
    let args = [
        "--settings",
        settings.to_str().unwrap(),
        "--claude-json",
        claude.to_str().unwrap(),
        "--home",
        home.to_str().unwrap(),
    ];
    w.ok("install", &args);
    let hook = format!("{BIN} hook --home {}", home.display());
    assert_eq!(commands(&read_json(&settings), "Stop"), [hook]);
    assert_eq!(
        read_json(&claude)["mcpServers"]["polaris"]["env"],
        json!({"POLARIS_HOME": home})
    );
    assert!(home.join("daemon.secret").exists());
    assert!(
        !w.settings().exists(),
        "the default settings are not touched"
    );
    assert_mode(&settings, 0o600);
    w.ok("uninstall", &args);
    assert!(!settings.exists());
}

fn assert_mode(path: &Path, want: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, want, "{}", path.display());
    }
}

#[test]
fn claude_config_dir_is_followed_and_an_old_polaris_mcp_entry_is_replaced() {
    let w = World::new();
    let cfg = w.dir.path().join("claude-cfg");
    // The original Polaris's entry, secret in its environment.
    write_json(
        &cfg.join(".claude.json"),
        &json!({"mcpServers": {"polaris": {"command": "bun", "args": ["/u/.polaris/mcp.ts"],
            "env": {"POLARIS_DAEMON_SECRET": "0ld-s3cret"}}}}),
    );
    std::fs::create_dir_all(w.home()).unwrap();
    let out = Command::new(BIN)
        .arg("install")
        .env_clear()
        .env("HOME", w.home())
        .env("CLAUDE_CONFIG_DIR", &cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("replaced \"polaris\""), "{said}");
    assert_eq!(
        commands(&read_json(&cfg.join("settings.json")), "Stop"),
        [format!("{BIN} hook")]
    );
    let c = read_json(&cfg.join(".claude.json"));
    assert_eq!(c["mcpServers"]["polaris"]["command"], BIN);
    assert!(
        !std::fs::read_to_string(cfg.join(".claude.json"))
            .unwrap()
            .contains("0ld-s3cret")
    );
    assert!(!w.settings().exists() && !w.claude_json().exists());
}

#[test]
fn another_builds_entries_are_updated_in_place_not_doubled() {
    let w = World::new();
    let settings = json!({
        "hooks": {
            "Stop": [
                {"hooks": [{"type": "command", "command": "/old/bin/polaris hook --home /old/home"}]},
                {"hooks": [{"type": "command", "command": "say done"}]}
            ]
        },
        "statusLine": {"type": "command", "command": "/old/bin/polaris hook --statusline"}
    });
    write_json(&w.settings(), &settings);
    let said = w.ok("install", &[]);
    assert!(said.contains("updated: Stop"), "{said}");
    assert!(said.contains("status line: updated"), "{said}");
    let s = read_json(&w.settings());
    let hook = format!("{BIN} hook");
    assert_eq!(commands(&s, "Stop"), [hook.as_str(), "say done"]);
    assert_eq!(
        s["statusLine"]["command"],
        format!("{BIN} hook --statusline")
    );
    for event in ["UserPromptSubmit", "PreToolUse", "PostToolUse"] {
        assert_eq!(commands(&s, event), [hook.as_str()], "{event}");
    }

    w.ok("uninstall", &[]);
    let s = read_json(&w.settings());
    assert_eq!(
        s,
        json!({"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]}})
    );
}

/// `/polaris join #project`, the next step install prints, needs the skill: install writes
/// it beside the settings, keeps a user's own, and uninstall takes back only an unedited one.
#[test]
fn the_polaris_skill_is_installed_and_removed_unless_it_is_the_users() {
    let w = World::new();
    let skill = w.home().join(".claude/skills/polaris/SKILL.md");
    let out = w.ok("install", &[]);
    assert!(out.contains("/polaris skill: added"), "{out}");
    let text = std::fs::read_to_string(&skill).unwrap();
    assert!(text.starts_with("---\nname: polaris\n"), "{text}");
    for tool in [
        "polaris_connect",
        "polaris_status",
        "polaris_rename",
        "polaris_reply",
        "polaris_context",
        "polaris_team",
        "polaris_backfill",
        "polaris_disconnect",
    ] {
        assert!(text.contains(tool), "{tool} missing from the skill");
    }
    assert!(
        w.ok("install", &[])
            .contains("/polaris skill: already there")
    );
    let out = w.ok("uninstall", &[]);
    assert!(out.contains("/polaris skill: removed"), "{out}");
    assert!(!skill.exists());
    assert!(!skill.parent().unwrap().exists());

    // The user's own skill of that name is never replaced or removed.
    std::fs::create_dir_all(skill.parent().unwrap()).unwrap();
    std::fs::write(&skill, "---\nname: polaris\ndescription: mine\n---\n").unwrap();
    assert!(w.ok("install", &[]).contains("yours kept"));
    w.ok("uninstall", &[]);
    assert_eq!(
        std::fs::read_to_string(&skill).unwrap(),
        "---\nname: polaris\ndescription: mine\n---\n"
    );

    // Ours, edited after install, stays.
    std::fs::remove_file(&skill).unwrap();
    w.ok("install", &[]);
    let edited = format!(
        "{}\nAlways join as user:manu.\n",
        std::fs::read_to_string(&skill).unwrap()
    );
    std::fs::write(&skill, &edited).unwrap();
    assert!(w.ok("uninstall", &[]).contains("edited since install"));
    assert_eq!(std::fs::read_to_string(&skill).unwrap(), edited);
}

/// A `polaris hook` entry the user wrote by hand is theirs: install neither takes it over
/// nor removes it, and uninstall takes back only what install recorded it wrote.
#[test]
fn a_users_own_polaris_hook_survives_install_and_uninstall() {
    let w = World::new();
    let theirs = "/path/to/polaris hook --something";
    let settings = json!({
        "hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": theirs}]}],
            "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": theirs}]}]
        }
    });
    write_json(&w.settings(), &settings);
    let said = w.ok("install", &[]);
    assert!(!said.contains("updated"), "{said}");
    let hook = format!("{BIN} hook");
    let s = read_json(&w.settings());
    assert_eq!(commands(&s, "Stop"), [theirs, hook.as_str()]);
    assert_eq!(commands(&s, "PreToolUse"), [theirs, hook.as_str()]);
    let record = w.polaris_home().join("install-record.json");
    assert_mode(&record, 0o600);

    // After install the user adds, by hand, what an install of another build would write:
    // with a record, it is still theirs.
    let mut s = read_json(&w.settings());
    let by_hand = "/opt/other/polaris hook";
    let entry = json!({"hooks": [{"type": "command", "command": by_hand}]});
    s["hooks"]["UserPromptSubmit"]
        .as_array_mut()
        .unwrap()
        .push(entry.clone());
    write_json(&w.settings(), &s);

    let said = w.ok("uninstall", &[]);
    assert!(said.contains("removed 4"), "{said}");
    let mut expected = settings.clone();
    expected["hooks"]["UserPromptSubmit"] = json!([entry]);
    assert_eq!(read_json(&w.settings()), expected);

    // Installing again takes nothing of theirs over either: the record still says what
    // was ours here (nothing, now), so their entry is not taken for an older build's.
    w.ok("install", &[]);
    let s = read_json(&w.settings());
    assert_eq!(commands(&s, "UserPromptSubmit"), [by_hand, hook.as_str()]);
    assert_eq!(commands(&s, "Stop"), [theirs, hook.as_str()]);
    w.ok("uninstall", &[]);
    assert_eq!(read_json(&w.settings()), expected);
}

/// An older build kept no record: uninstall then removes exactly the commands an install
/// writes, where it writes them, and nothing that merely starts like one.
#[test]
fn an_older_builds_install_without_a_record_is_still_uninstalled() {
    let w = World::new();
    let old = "/old/bin/polaris hook --home /old/home";
    let entry = |c: &str| json!({"hooks": [{"type": "command", "command": c}]});
    let theirs = json!({
        "Stop": [entry("/old/bin/polaris hook --something")],
        "Notification": [entry("/old/bin/polaris hook")]
    });
    let mut settings = json!({
        "hooks": {
            "UserPromptSubmit": [entry(old)],
            "Stop": [entry("/old/bin/polaris hook --something"), entry(old)],
            "PreToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": old}]}],
            "PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": old}]}],
            "Notification": [entry("/old/bin/polaris hook")]
        },
        "statusLine": {"type": "command", "command": "/old/bin/polaris hook --statusline --home /old/home"}
    });
    write_json(&w.settings(), &settings);
    assert!(!w.polaris_home().join("install-record.json").exists());
    let said = w.ok("uninstall", &[]);
    assert!(said.contains("removed 4"), "{said}");
    assert!(said.contains("status line: removed"), "{said}");
    settings = read_json(&w.settings());
    assert_eq!(settings, json!({"hooks": theirs}));
}
