//! The local secret every sidecar route but `/healthz` requires.
//!
//! It lives in its own file (mode 0600) so that nothing has to copy it into another file:
//! the installer writes only this path into Claude Code's settings, never the value.

use std::io::{self, Read, Write};
use std::path::Path;

use polaris_config::Env;

use crate::home::{Home, create_private_dir, private_file_options};

/// The secret from `POLARIS_DAEMON_SECRET` if set and non-empty, else from the home's
/// secret file; `None` when neither exists.
pub fn read(home: &Home, env: &Env) -> io::Result<Option<String>> {
    if let Some(v) = env.get("POLARIS_DAEMON_SECRET")
        && !v.trim().is_empty()
    {
        return Ok(Some(v.trim().to_string()));
    }
    read_file(&home.secret_file())
}

/// The secret stored at `path`, if the file exists.
pub fn read_file(path: &Path) -> io::Result<Option<String>> {
    let mut s = String::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut s)?;
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The secret, creating the secret file (32 random bytes as hex, mode 0600) if there is
/// no secret yet.
pub fn load_or_create(home: &Home, env: &Env) -> io::Result<String> {
    if let Some(s) = read(home, env)? {
        return Ok(s);
    }
    create_private_dir(home.root())?;
    let secret = generate();
    let path = home.secret_file();
    // create_new: if another process won the race, use its secret.
    match private_file_options()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_file(&path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty secret file")),
        Err(e) => Err(e),
    }
}

/// A fresh random secret: 32 bytes from the OS generator, hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a presented secret with the expected one in constant time.
pub fn matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_env_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path().join("h"));
        let none = Env::default();
        let a = load_or_create(&home, &none).expect("create");
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(&home, &none).expect("again"), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.secret_file())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let env = Env::from_pairs([("POLARIS_DAEMON_SECRET", "from-env")]);
        assert_eq!(
            read(&home, &env).expect("read").as_deref(),
            Some("from-env")
        );
        assert!(matches(&a, &a));
        assert!(!matches(&a, "nope"));
    }
}
