//! `examples/dean/`: the Dockerfile and compose file agree with each other and with what
//! `polaris agent run` needs, and the exact command and environment the Dean container
//! runs, run as a process over a copy of the image's filesystem, answers `@dean`, is
//! healthy by the image's own HEALTHCHECK command, and stops cleanly on SIGTERM. (No
//! container engine runs here; this is the test the issue asks for instead.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use polaris_runtime::auth::Role;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use tokio::process::Command;

use crate::answers::wait_for;
use crate::support::{BIN, Backend, Options, TestServer, eventually, spawn_listening, token};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/dean")
        .join(file)
}

/// The Dockerfile's instructions, continuation lines joined: (instruction, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(example("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            let (k, v) = current.trim().split_once(' ').unwrap();
            out.push((k.to_uppercase(), v.trim().to_owned()));
            current.clear();
        }
    }
    out
}

/// The JSON-array (exec) form of a Dockerfile instruction.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{rest:?} is not exec form: {e}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} missing from {args:?}"));
    &args[i + 1]
}

fn port_of(addr_or_url: &str) -> u16 {
    let tail = addr_or_url.rsplit(':').next().unwrap();
    tail.split('/').next().unwrap().parse().unwrap()
}

struct Compose {
    services: serde_yaml::Mapping,
    secrets: serde_yaml::Mapping,
}

fn compose() -> Compose {
    let text = std::fs::read_to_string(example("compose.yaml")).unwrap();
    let mut doc: Yaml = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    Compose {
        services: doc["services"].as_mapping().unwrap().clone(),
        secrets: doc["secrets"].as_mapping().unwrap().clone(),
    }
}

#[test]
fn the_dockerfile_and_compose_file_agree() {
    let df = dockerfile();
    let one = |k: &str| -> String {
        let found: Vec<&String> = df.iter().filter(|(i, _)| i == k).map(|(_, v)| v).collect();
        found.last().unwrap_or_else(|| panic!("no {k}")).to_string()
    };
    // Multi-stage, small non-root runtime image, no secrets baked in.
    assert!(
        df.iter().filter(|(i, _)| i == "FROM").count() >= 2,
        "multi-stage"
    );
    let user = one("USER");
    assert!(
        !["root", "0", "0:0", "root:root"].contains(&user.as_str()),
        "{user}"
    );
    for (i, v) in &df {
        if i == "ENV" || i == "ARG" {
            let upper = v.to_uppercase();
            for word in ["TOKEN", "SECRET", "PASSWORD", "DATABASE_URL"] {
                assert!(!upper.contains(word), "{i} {v} bakes a secret in");
            }
        }
    }
    // `polaris agent run` hands over to `polaris-agent` when it is installed beside it.
    assert!(
        df.iter().any(|(i, v)| i == "COPY"
            && v.contains("/polaris-agent")
            && v.ends_with("/usr/local/bin/")),
        "polaris-agent beside polaris: {df:?}"
    );
    let cmd = exec_form(&one("CMD"));
    let entry = exec_form(&one("ENTRYPOINT"));
    assert!(entry[0].ends_with("/polaris"), "{entry:?}");
    assert_eq!(&cmd[..3], ["agent", "run", "agent:dean"]);
    let listen = port_of(flag(&cmd, "--listen"));
    assert_eq!(one("EXPOSE").parse::<u16>().unwrap(), listen);
    let health = one("HEALTHCHECK");
    let probe = exec_form(health.split_once("CMD ").unwrap().1);
    assert_eq!(probe[..2], [entry[0].clone(), "probe".into()]);
    assert!(probe[2].ends_with("/healthz"), "{probe:?}");
    assert_eq!(port_of(&probe[2]), listen);
    let state = flag(&cmd, "--state");
    assert_eq!(one("WORKDIR"), state);

    // Compose runs that same command, twice (active and standby), each with its own
    // state volume at --state, the token as a file: reference to a declared secret.
    let c = compose();
    let dean = &c.services["dean"];
    let standby = &c.services["dean-standby"];
    assert_eq!(strings(&dean["command"]), cmd);
    assert_eq!(strings(&standby["command"]), cmd);
    let volume = |s: &Yaml| strings(&s["volumes"])[0].clone();
    let (v1, v2) = (volume(dean), volume(standby));
    assert_ne!(
        v1.split(':').next(),
        v2.split(':').next(),
        "one WAL per Dean"
    );
    for v in [&v1, &v2] {
        assert_eq!(v.split(':').nth(1), Some(state), "{v}");
    }
    let token_ref = flag(&cmd, "--token");
    let secret = token_ref
        .strip_prefix("file:/run/secrets/")
        .expect("file: reference");
    assert!(strings(&dean["secrets"]).contains(&secret.to_owned()));
    assert!(c.secrets.contains_key(secret), "{secret} is not declared");
    assert_eq!(strings(&dean["expose"]), [listen.to_string()]);
    assert_eq!(strings(&dean["healthcheck"]["test"])[1..], probe[..]);
    assert!(dean["environment"]["POLARIS_SERVICE_URL"].is_string());
    for (k, _) in dean["environment"].as_mapping().unwrap() {
        let k = k.as_str().unwrap().to_uppercase();
        assert!(
            !k.contains("TOKEN") && !k.contains("SECRET"),
            "{k} in plain env"
        );
    }

    // Dean reaches the floor service at the address the floor listens on.
    let floor_url = dean["environment"]["POLARIS_SERVICE_URL"].as_str().unwrap();
    let floor_cmd = strings(&c.services["floor"]["command"]);
    assert_eq!(floor_cmd[0], "serve");
    let config: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(example("polaris.yaml")).unwrap()).unwrap();
    assert_eq!(
        floor_url,
        format!(
            "http://floor:{}",
            port_of(config["listen"].as_str().unwrap())
        )
    );
    for key in ["database", "jwt_secret"] {
        let r = config[key].as_str().unwrap();
        let name = r
            .strip_prefix("file:/run/secrets/")
            .expect("a file: reference");
        assert!(
            strings(&c.services["floor"]["secrets"]).contains(&name.to_owned()),
            "{key}"
        );
    }

    // The build context never holds the example's secrets.
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "examples/dean/secrets/"),
        "{ignore}"
    );
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.path().extension().is_none_or(|e| e != "db") {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The image's filesystem, under a temporary root: what the Dockerfile copies in, the
/// state directory, and the secret compose mounts.
struct ImageRoot {
    dir: tempfile::TempDir,
}

impl ImageRoot {
    fn new(dean_token: &str) -> ImageRoot {
        let dir = tempfile::tempdir().unwrap();
        let root = ImageRoot { dir };
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
            &root.path("/etc/polaris"),
        );
        std::fs::create_dir_all(root.path("/var/lib/polaris-agent")).unwrap();
        std::fs::create_dir_all(root.path("/run/secrets")).unwrap();
        std::fs::write(root.path("/run/secrets/dean_token"), dean_token).unwrap();
        // The agents file names container paths too.
        let agents = root.path("/etc/polaris/dean/agents.yaml");
        let text = std::fs::read_to_string(&agents).unwrap();
        std::fs::write(&agents, root.rewrite(&text)).unwrap();
        root
    }

    /// A container path under this root.
    fn path(&self, container: &str) -> PathBuf {
        self.dir.path().join(container.trim_start_matches('/'))
    }

    /// Every container path in `s`, under this root.
    fn rewrite(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for prefix in ["/etc/polaris", "/var/lib/polaris-agent", "/run/secrets"] {
            out = out.replace(prefix, self.path(prefix).to_str().unwrap());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dean_container_command_runs_and_answers() {
    let Some(srv) = TestServer::start(
        Backend::Sqlite,
        Options {
            secret: true,
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    let root = ImageRoot::new(&token("default", "agent:dean", Role::Member));
    srv.load_agents(&root.path("/etc/polaris/dean/agents.yaml"))
        .await;

    // Exactly the compose service's command and environment; only the paths move under
    // the root, the floor's address is the test's, and the health port is a free one.
    let c = compose();
    let dean = &c.services["dean"];
    let args: Vec<String> = strings(&dean["command"])
        .iter()
        .map(|a| match a.as_str() {
            a if a.starts_with("0.0.0.0:") => "127.0.0.1:0".to_owned(),
            a => root.rewrite(a),
        })
        .collect();
    let mut env = BTreeMap::new();
    for (k, v) in dean["environment"].as_mapping().unwrap() {
        env.insert(
            k.as_str().unwrap().to_owned(),
            v.as_str().unwrap().to_owned(),
        );
    }
    env.insert("POLARIS_SERVICE_URL".into(), srv.base.clone());
    env.insert("POLARIS_LOG".into(), "warn".into());
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .env_clear()
        .envs(&env)
        .current_dir(root.path("/var/lib/polaris-agent"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let (mut child, health) = spawn_listening(cmd).await;
    // The same process, now the agents-only binary.
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id().unwrap())).unwrap();
    assert!(exe.ends_with("polaris-agent"), "{}", exe.display());

    // The image's HEALTHCHECK command, as Docker would run it.
    let probe = Command::new(BIN)
        .args(["probe", &format!("{health}/healthz")])
        .status()
        .await
        .unwrap();
    assert!(probe.success());
    eventually(20, || async {
        let r = crate::support::http()
            .get(format!("{health}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let manu = srv.client_as("default", "user:manu", Role::Member);
    let r = manu
        .post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    manu.project_session("warehouse", "s-1").await;
    let mut ws = manu
        .ws("/projects/warehouse/sessions/s-1/ws")
        .await
        .unwrap();
    let q = manu
        .prompt(
            "warehouse",
            "s-1",
            "user:manu",
            "@dean which tables hold PII?",
        )
        .await;
    let id = q.json["id"].clone();
    let a = wait_for(&mut ws, "the container Dean's answer", |e: &Value| {
        e["payload"]["in_reply_to"] == id
    })
    .await;
    assert_eq!(a["sender"], "agent:dean");
    assert_eq!(a["payload"]["persona"]["name"], "Dean (Data)");
    // The example warehouse was built in the state volume.
    assert!(root.path("/var/lib/polaris-agent/warehouse.db").exists());
    assert!(root.path("/var/lib/polaris-agent/wal").is_dir());

    // `docker stop`: SIGTERM, exit 0 well within the grace period.
    let status = crate::support::terminate(&mut child, 20, "the agent container").await;
    assert!(status.success(), "{status:?}");
    srv.finish().await;
}
