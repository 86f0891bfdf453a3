//! The sidecar's settings, resolved once at start: where to listen, which floor, which
//! token. Flags win over the environment, which wins over `config.json`.

use std::net::SocketAddr;
use std::path::Path;

use polaris_config::Env;
use serde::Deserialize;

use crate::home::Home;
use crate::wire::DEFAULT_PORT;

/// The floor used when nothing names one: a floor on this machine.
pub const DEFAULT_FLOOR: &str = "http://127.0.0.1:4321";

/// The address to listen on: `--listen`, else `127.0.0.1:$POLARIS_DAEMON_PORT`, else
/// `127.0.0.1:4322`. Anything but a loopback address is refused: the API hands out
/// teammates' messages and accepts events in the user's name.
pub fn listen_addr(flag: Option<&str>, env: &Env) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = match flag {
        Some(s) => s.parse().map_err(|_| {
            anyhow::anyhow!("--listen {s:?}: expected an address such as 127.0.0.1:4322")
        })?,
        None => {
            let port = match env.get("POLARIS_DAEMON_PORT") {
                Some(p) => p.trim().parse::<u16>().map_err(|_| {
                    anyhow::anyhow!("POLARIS_DAEMON_PORT {p:?}: expected a port number")
                })?,
                None => DEFAULT_PORT,
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--listen {addr}: the sidecar listens on loopback only (127.0.0.1 or ::1); \
             it accepts events in your name and hands out your teammates' messages"
        );
    }
    Ok(addr)
}

/// The floor URL and token.
#[derive(Clone)]
pub struct FloorSettings {
    /// Base URL.
    pub url: String,
    /// Bearer token, if any.
    pub token: Option<String>,
}

impl std::fmt::Debug for FloorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloorSettings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    #[serde(default)]
    active: Option<String>,
    #[serde(default)]
    profiles: std::collections::HashMap<String, Profile>,
}

#[derive(Deserialize, Default, Clone)]
struct Profile {
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

fn active_profile(path: &Path) -> anyhow::Result<Profile> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let cfg: ConfigJson =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg
        .active
        .and_then(|a| cfg.profiles.get(&a).cloned())
        .unwrap_or_default())
}

/// The floor: `--floor`/`--token`, else `POLARIS_SERVICE_URL`/`POLARIS_AUTH_TOKEN`, else
/// the active profile of `config.json`, else [`DEFAULT_FLOOR`] with no token. As in the
/// original, `POLARIS_AUTH_TOKEN` set but empty means "send no token" (the profile's is
/// not used).
pub fn floor_settings(
    url_flag: Option<&str>,
    token_flag: Option<&str>,
    home: &Home,
    env: &Env,
) -> anyhow::Result<FloorSettings> {
    let profile = active_profile(&home.config_json())?;
    let url = url_flag
        .map(str::to_owned)
        .or_else(|| env.get("POLARIS_SERVICE_URL").map(str::to_owned))
        .or(profile.api)
        .unwrap_or_else(|| DEFAULT_FLOOR.to_owned());
    let token = token_flag
        .map(str::to_owned)
        .or_else(|| env.get("POLARIS_AUTH_TOKEN").map(str::to_owned))
        .or_else(|| {
            if env.is_set("POLARIS_AUTH_TOKEN") {
                None
            } else {
                profile.token
            }
        })
        .filter(|t| !t.trim().is_empty());
    Ok(FloorSettings { url, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_and_port_from_env() {
        let env = Env::from_pairs([("POLARIS_DAEMON_PORT", "5555")]);
        assert_eq!(
            listen_addr(None, &env).expect("addr").to_string(),
            "127.0.0.1:5555"
        );
        assert!(listen_addr(Some("[::1]:0"), &env).is_ok());
        let err = listen_addr(Some("0.0.0.0:4322"), &env).expect_err("refused");
        assert!(err.to_string().contains("loopback only"), "{err}");
    }

    #[test]
    fn flags_then_env_then_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path());
        std::fs::write(
            home.config_json(),
            r#"{"active":"local","profiles":{"local":{"api":"http://127.0.0.1:9","token":"t1"}}}"#,
        )
        .expect("write");
        let none = Env::default();
        let f = floor_settings(None, None, &home, &none).expect("profile");
        assert_eq!(f.url, "http://127.0.0.1:9");
        assert_eq!(f.token.as_deref(), Some("t1"));
        let env = Env::from_pairs([("POLARIS_SERVICE_URL", "http://e:1")]);
        let f = floor_settings(None, None, &home, &env).expect("env");
        assert_eq!(f.url, "http://e:1");
        let f = floor_settings(Some("http://f:2"), Some("t2"), &home, &env).expect("flag");
        assert_eq!(
            (f.url.as_str(), f.token.as_deref()),
            ("http://f:2", Some("t2"))
        );
        // Set but empty: no token at all, not the profile's.
        let env = Env::from_pairs([("POLARIS_AUTH_TOKEN", "")]);
        let f = floor_settings(None, None, &home, &env).expect("empty token");
        assert_eq!(f.token, None);
    }
}
