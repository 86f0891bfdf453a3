//! `polaris models fetch` against a mirror the test serves on loopback: the three files
//! land in the directory when the weights have the recorded sha256, and a tampered or
//! missing file is refused by name, leaving the directory as it was.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::support::BIN;

const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Serves the files of `dir` at `/m/NAME` until dropped; returns the base URL.
async fn mirror(dir: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    async fn file(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        if name.contains('/') || name.starts_with('.') {
            return Err(StatusCode::NOT_FOUND);
        }
        tokio::fs::read(dir.join(name))
            .await
            .map_err(|_| StatusCode::NOT_FOUND)
    }
    let app = axum::Router::new()
        .route("/m/{name}", axum::routing::get(file))
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/m", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, server)
}

/// `polaris models fetch --url BASE --dir DIR EXTRA…`: (success, stdout, stderr).
async fn fetch(base: &str, dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["models", "fetch", "--url", base, "--dir"])
        .arg(dir)
        .args(extra)
        .env_remove("POLARIS_MODEL_DIR")
        .env("POLARIS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names in `dir`, sorted (hidden temporary files included).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Small stand-ins for the three files.
fn fakes(dir: &Path) -> String {
    std::fs::write(dir.join("config.json"), r#"{"hidden_size": 8}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"version": "1.0"}"#).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not the weights you want").unwrap();
    hex::encode(Sha256::digest(b"not the weights you want"))
}

#[tokio::test]
async fn tampered_or_missing_files_are_refused_by_name_and_leave_nothing() {
    let served = tempfile::tempdir().unwrap();
    let fake_hash = fakes(served.path());
    let (base, _server) = mirror(served.path().to_path_buf()).await;
    let target = tempfile::tempdir().unwrap();
    // A model already in place is not touched by a fetch that fails.
    std::fs::write(target.path().join("config.json"), "{\"kept\": true}").unwrap();

    // Weights that are not all-MiniLM-L6-v2: refused, naming the file and both hashes.
    let (ok, _, err) = fetch(&base, target.path(), &[]).await;
    assert!(!ok, "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains(&fake_hash), "{err}");
    assert!(
        err.contains(polaris_passive::MINILM_SHA256),
        "names the recorded hash: {err}"
    );
    assert_eq!(
        listing(target.path()),
        ["config.json"],
        "nothing left behind"
    );
    assert_eq!(
        std::fs::read_to_string(target.path().join("config.json")).unwrap(),
        "{\"kept\": true}"
    );

    // A file the mirror does not have: named, nothing left behind.
    std::fs::remove_file(served.path().join("tokenizer.json")).unwrap();
    let (ok, _, err) = fetch(&base, target.path(), &["--sha256", &fake_hash]).await;
    assert!(!ok);
    assert!(
        err.contains("tokenizer.json") && err.contains("404"),
        "{err}"
    );
    assert_eq!(listing(target.path()), ["config.json"]);

    // A JSON file that is not JSON.
    std::fs::write(served.path().join("tokenizer.json"), "<html>login</html>").unwrap();
    let (ok, _, err) = fetch(&base, target.path(), &["--sha256", &fake_hash]).await;
    assert!(!ok);
    assert!(
        err.contains("tokenizer.json") && err.contains("not JSON"),
        "{err}"
    );
    assert_eq!(listing(target.path()), ["config.json"]);

    // A malformed --sha256 is refused before anything is fetched.
    let (ok, _, err) = fetch(&base, target.path(), &["--sha256", "abc"]).await;
    assert!(!ok && err.contains("--sha256"), "{err}");
}

#[tokio::test]
async fn the_files_land_when_the_weights_have_the_expected_hash() {
    // Stand-ins, with their hash given: the three files are written as served.
    let served = tempfile::tempdir().unwrap();
    let fake_hash = fakes(served.path());
    let (base, _server) = mirror(served.path().to_path_buf()).await;
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("models/minilm");
    let (ok, out, err) = fetch(&base, &dir, &["--sha256", &fake_hash]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&fake_hash), "{out}");
    let mut want: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(listing(&dir), want);
    for f in FILES {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(served.path().join(f)).unwrap(),
            "{f}"
        );
    }

    // The real model, when the test has it: fetched with the recorded hash, it loads.
    let Some(model) = crate::passive::model_dir() else {
        return;
    };
    let (base, _server) = mirror(PathBuf::from(model)).await;
    let dir = target.path().join("real");
    let (ok, _, err) = fetch(&base, &dir, &[]).await;
    assert!(ok, "{err}");
    polaris_passive::Embedder::load(&dir).unwrap_or_else(|e| panic!("{e}"));
}
