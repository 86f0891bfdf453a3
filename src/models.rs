//! `polaris models fetch`: downloads passive monitoring's model (all-MiniLM-L6-v2, the
//! sentence-transformers files) into a directory, for people who have network. Nothing in
//! Polaris downloads at run time: `polaris serve --model-dir` reads what this wrote.
//!
//! Each file goes to a temporary name beside its final one; `model.safetensors` is
//! checked against the recorded sha256 and the two JSON files must parse. Only when all
//! three pass are they renamed into place, so a refused or interrupted fetch leaves the
//! directory as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use polaris_passive::{MINILM_SHA256, MODEL_FILES};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The Hugging Face repository files, at the revision whose `model.safetensors` has the
/// recorded sha256 (a pinned commit, so the files never change under the hash).
pub(crate) const DEFAULT_URL: &str = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
/// Largest file accepted (the weights are 87 MiB).
const MAX_BYTES: u64 = 512 << 20;

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Download all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors) into a
    /// directory for `--model-dir`, checking the weights' sha256; nothing is left behind
    /// when a check fails.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// Where the files go (created if missing).
    #[arg(
        long,
        env = "POLARIS_MODEL_DIR",
        value_name = "DIR",
        default_value = "models/all-minilm-l6-v2"
    )]
    dir: PathBuf,
    /// Base URL the three files are read from (`BASE/config.json`, …): a mirror.
    #[arg(long, value_name = "BASE", default_value = DEFAULT_URL)]
    url: String,
    /// The sha256 `model.safetensors` must have [default: the all-MiniLM-L6-v2 weights
    /// this version is built for, the only ones `polaris serve` loads].
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
}

pub(crate) fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    let ModelsCommand::Fetch(args) = cmd;
    let expected = match &args.sha256 {
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--sha256: expected 64 hexadecimal digits, got {h:?}");
            }
            h
        }
        None => MINILM_SHA256.to_owned(),
    };
    let base = args.url.trim_end_matches('/').to_owned();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        bail!("--url {base:?}: must be an http:// or https:// URL");
    }
    polaris_sidecar::uplink::install_tls_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(fetch(&base, &args.dir, &expected))
}

/// A downloaded file under its temporary name, removed unless it is moved into place.
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    kept: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            // Gone already, or never written: either way nothing is left.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

async fn fetch(base: &str, dir: &Path, expected: &str) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    // What an interrupted fetch left behind.
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if MODEL_FILES
                .iter()
                .any(|f| n.starts_with(&format!(".{f}.part-")))
            {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    let mut staged = Vec::new();
    let mut report = Vec::new();
    for name in MODEL_FILES {
        let url = format!("{base}/{name}");
        let dest = dir.join(name);
        let file = Staged {
            tmp: dir.join(format!(".{name}.part-{}", std::process::id())),
            dest,
            kept: false,
        };
        let (hash, bytes) = download(&http, &url, &file.tmp)
            .await
            .with_context(|| format!("{name}: downloading {url}"))?;
        if name == "model.safetensors" {
            if hash != expected {
                bail!(
                    "{name} from {url} has sha256 {hash}, expected {expected}: refused (nothing was written to {})",
                    dir.display()
                );
            }
        } else {
            let text = tokio::fs::read(&file.tmp).await?;
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&text) {
                bail!(
                    "{name} from {url} is not JSON ({e}): refused (nothing was written to {})",
                    dir.display()
                );
            }
        }
        report.push(format!("{name}: {bytes} bytes, sha256 {hash}"));
        staged.push(file);
    }
    for mut f in staged {
        tokio::fs::rename(&f.tmp, &f.dest)
            .await
            .with_context(|| format!("moving {} into place", f.dest.display()))?;
        f.kept = true;
    }
    for line in report {
        println!("{line}");
    }
    println!(
        "all-MiniLM-L6-v2 is in {}: start with --model-dir {0} (or passive.model_dir)",
        dir.display()
    );
    Ok(())
}

/// Streams `url` into `to`, hashing as it goes; the file is on disk (fsynced) when this
/// returns.
async fn download(http: &reqwest::Client, url: &str, to: &Path) -> anyhow::Result<(String, u64)> {
    let mut resp = http.get(url).send().await?;
    if !resp.status().is_success() {
        bail!("the server answered {}", resp.status());
    }
    if resp.content_length().is_some_and(|n| n > MAX_BYTES) {
        bail!("larger than {MAX_BYTES} bytes");
    }
    let mut out = tokio::fs::File::create(to)
        .await
        .with_context(|| format!("creating {}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
        if bytes > MAX_BYTES {
            bail!("larger than {MAX_BYTES} bytes");
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.sync_all().await?;
    Ok((hex::encode(hasher.finalize()), bytes))
}
