//! For the workspace's tests: the model they share, named by `POLARIS_TEST_MODEL_DIR` (CI
//! sets it, and `POLARIS_TEST_REQUIRE_MODEL`, after fetching the weights once).

use std::path::Path;

use crate::Embedder;

/// `POLARIS_TEST_MODEL_DIR`, or `None` (with a message saying how to run the test) when it
/// is not set; a test run with `POLARIS_TEST_REQUIRE_MODEL` set fails instead.
pub fn model_dir() -> Option<String> {
    let env = polaris_config::Env::from_process();
    let Some(dir) = env.get("POLARIS_TEST_MODEL_DIR") else {
        assert!(
            env.get("POLARIS_TEST_REQUIRE_MODEL").is_none(),
            "POLARIS_TEST_REQUIRE_MODEL is set but POLARIS_TEST_MODEL_DIR is not"
        );
        eprintln!("skipping: set POLARIS_TEST_MODEL_DIR to an all-MiniLM-L6-v2 directory");
        return None;
    };
    Some(dir.to_owned())
}

/// The model in [`model_dir`], loaded (a directory that does not load fails the test).
pub fn model() -> Option<Embedder> {
    model_dir().map(|dir| Embedder::load(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}")))
}
