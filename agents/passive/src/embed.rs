//! The second stage's model: a sentence embedder (BERT, mean pooling over the attention
//! mask, L2-normalised), run in process on the CPU with candle. It loads from a local
//! directory in the sentence-transformers layout and never downloads anything.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The sha256 of all-MiniLM-L6-v2's `model.safetensors`, the model passive monitoring is
/// written and measured for.
pub const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// Tokens read per text (what the model was trained with).
const MAX_TOKENS: usize = 256;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model directory is missing or unreadable.
    #[error("model file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The weights are not the ones recorded.
    #[error(
        "model file {path} has sha256 {found}, expected {expected}: not the all-MiniLM-L6-v2 weights this version is built for"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Its hash.
        found: String,
        /// The recorded hash.
        expected: &'static str,
    },
    /// The model failed while running.
    #[error("embedding model: {0}")]
    Run(String),
}

fn run_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Run(e.to_string())
}

/// A loaded sentence embedder.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("dim", &self.dim).finish()
    }
}

impl Embedder {
    /// Loads the model in `dir`, checking `model.safetensors` against [`MINILM_SHA256`].
    pub fn load(dir: &Path) -> Result<Embedder, ModelError> {
        for f in MODEL_FILES {
            let path = dir.join(f);
            if !path.is_file() {
                return Err(ModelError::File {
                    path,
                    message: "missing (the directory needs config.json, tokenizer.json and model.safetensors)".into(),
                });
            }
        }
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::File {
            path: weights.clone(),
            message: e.to_string(),
        })?;
        let found = hex::encode(Sha256::digest(&bytes));
        if found != MINILM_SHA256 {
            return Err(ModelError::Checksum {
                path: weights,
                found,
                expected: MINILM_SHA256,
            });
        }
        let config_path = dir.join("config.json");
        let config: Config = std::fs::read_to_string(&config_path)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .map_err(|message| ModelError::File {
                path: config_path,
                message,
            })?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| ModelError::File {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::File {
                path: tok_path,
                message: e.to_string(),
            })?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let device = Device::Cpu;
        let vb =
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(|e| {
                ModelError::File {
                    path: dir.join("model.safetensors"),
                    message: e.to_string(),
                }
            })?;
        let model = BertModel::load(vb, &config).map_err(|e| ModelError::File {
            path: dir.join("model.safetensors"),
            message: e.to_string(),
        })?;
        Ok(Embedder {
            model,
            tokenizer,
            device,
            dim: config.hidden_size,
        })
    }

    /// The length of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds `texts` in one batch: one unit vector per text. CPU-bound (milliseconds a
    /// text): call it off any actor's mailbox.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(run_err)?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, ModelError> {
            let v: Vec<Tensor> = enc
                .iter()
                .map(|e| Tensor::new(f(e).as_slice(), &self.device))
                .collect::<Result<_, _>>()
                .map_err(run_err)?;
            Tensor::stack(&v, 0).map_err(run_err)
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let types = rows(&|e| e.get_type_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(run_err)?;
        // Mean over the real tokens only, then unit length.
        let m = mask
            .to_dtype(DType::F32)
            .map_err(run_err)?
            .unsqueeze(2)
            .map_err(run_err)?;
        let summed = hidden
            .broadcast_mul(&m)
            .map_err(run_err)?
            .sum(1)
            .map_err(run_err)?;
        let counts = m.sum(1).map_err(run_err)?;
        let mean = summed.broadcast_div(&counts).map_err(run_err)?;
        let norm = mean
            .sqr()
            .map_err(run_err)?
            .sum_keepdim(1)
            .map_err(run_err)?
            .sqrt()
            .map_err(run_err)?;
        let unit = mean.broadcast_div(&norm).map_err(run_err)?;
        unit.to_vec2::<f32>().map_err(run_err)
    }
}

/// Builds now, from the calling thread, every thread pool the model's arithmetic runs on:
/// rayon's global pool (matrix products) and candle's own two (element-wise work, whose
/// threads spin a while after each operation before they sleep). Threads inherit their
/// creator's scheduling class, and each pool is otherwise built by whichever thread first
/// computes — so a caller that wants the model to run in a given class calls this, once,
/// from a thread in that class, before anything is embedded. Later calls do nothing.
/// Matrix products run on `threads` threads (candle sizes its own pools by the machine's
/// cores; a caller that wants them on fewer cores restricts the calling thread's affinity
/// first, which they inherit).
pub fn start_model_threads(threads: usize) {
    // Err: built already (by an earlier call, or by someone who computed first).
    if rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("model-{i}"))
        .build_global()
        .is_err()
    {
        tracing::debug!("rayon's global pool was built already");
    }
    candle_core::utils::barrier_pool();
    candle_core::utils::with_threadpool(|| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::model;

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let e = Embedder::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    }

    #[test]
    fn other_weights_are_refused_by_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        for f in MODEL_FILES {
            std::fs::write(dir.path().join(f), "not a model").unwrap();
        }
        let e = Embedder::load(dir.path()).unwrap_err();
        assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("model.safetensors") && e.contains(MINILM_SHA256),
            "{e}"
        );
    }

    #[test]
    fn embeddings_are_unit_vectors_and_close_for_close_meanings() {
        let Some(m) = model() else { return };
        let v = m
            .embed(&[
                "the nightly data load into the warehouse failed",
                "last night's warehouse ingestion job broke",
                "what a lovely sunny day for a picnic",
            ])
            .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].len(), m.dim());
        for x in &v {
            let n: f32 = x.iter().map(|a| a * a).sum();
            assert!((n - 1.0).abs() < 1e-3, "norm² {n}");
        }
        let cos = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.2);
        // One batch or one at a time: the same vectors (padding does not leak in).
        let alone = m.embed(&["what a lovely sunny day for a picnic"]).unwrap();
        assert!(cos(&alone[0], &v[2]) > 0.999);
    }
}
