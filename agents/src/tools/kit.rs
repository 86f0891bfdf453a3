//! Tools as a model sees them: a name, a description and a JSON Schema of arguments, and
//! a call that answers in text. What goes wrong is an `Err` with a sentence the model can
//! act on, never a panic.

use futures::future::BoxFuture;
use serde_json::Value;

/// A tool offered to a model.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// Its function name.
    pub name: &'static str,
    /// What it does (the model reads this to choose it).
    pub description: &'static str,
    /// Its arguments, as a JSON Schema object.
    pub parameters: Value,
}

/// A set of tools a brain may call.
pub trait Toolkit: Send + Sync {
    /// The tools on offer.
    fn specs(&self) -> Vec<ToolSpec>;

    /// Calls `name` with `args` (a JSON object): its result, or why it failed.
    fn call<'a>(&'a self, name: &'a str, args: &'a Value) -> BoxFuture<'a, Result<String, String>>;
}

/// The string argument `name` of `args`.
pub fn string_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("argument `{name}` must not be empty")),
        Some(_) => Err(format!("argument `{name}` must be a string")),
        None => Err(format!("missing argument `{name}`")),
    }
}
