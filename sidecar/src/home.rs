//! The sidecar's home directory and the paths inside it.
//!
//! Everything the sidecar, the hook and the installer share lives here, so the three agree
//! on file names without talking to each other.

use std::io;
use std::path::{Path, PathBuf};

use polaris_config::Env;

/// The sidecar's home: `--home`, else `POLARIS_HOME`, else `~/.polaris`.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit path.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// Resolves the home from a flag, then `POLARIS_HOME`, then `$HOME/.polaris`.
    pub fn resolve(flag: Option<&Path>, env: &Env) -> io::Result<Home> {
        if let Some(p) = flag {
            return Ok(Home::at(p));
        }
        if let Some(p) = env.get("POLARIS_HOME") {
            return Ok(Home::at(p));
        }
        match env.home() {
            Some(h) => Ok(Home::at(h.join(".polaris"))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no home directory: set HOME or POLARIS_HOME, or pass --home",
            )),
        }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The original's profiles file (floor URL and token).
    pub fn config_json(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// The local secret, mode 0600.
    pub fn secret_file(&self) -> PathBuf {
        self.root.join("daemon.secret")
    }

    /// Write-ahead log segments.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// Events the floor rejected for good.
    pub fn dead_letters(&self) -> PathBuf {
        self.root.join("dead-letter.jsonl")
    }

    /// Events the hook wrote while the sidecar was down.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Mappings, inject queues and stream cursors.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Daily JSONL logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// One line per connect and disconnect.
    pub fn history_file(&self) -> PathBuf {
        self.root.join("session-history.jsonl")
    }

    /// Creates the home (and `sub`, if given) with mode 0700 where it does not exist.
    pub fn ensure_dir(&self, sub: Option<&Path>) -> io::Result<PathBuf> {
        let dir = match sub {
            Some(s) => self.root.join(s),
            None => self.root.clone(),
        };
        create_private_dir(&dir)?;
        Ok(dir)
    }
}

/// Creates `dir` and its missing parents; the directories this creates get mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Opens a file for writing with mode 0600 (on creation), creating it if needed.
pub fn private_file_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}
