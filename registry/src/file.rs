//! Loading `agents.yaml`: parse, check, and point at the file, line and column of the
//! first problem.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::spec::{AgentSpec, check};

/// A problem in an agents file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct RegistryError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, starting with the field (`agents[1].parent: …`).
    pub message: String,
}

/// The agents of one file.
#[derive(Debug, Clone)]
pub struct AgentFile {
    /// Where they came from.
    pub path: PathBuf,
    /// The directory knowledge paths are relative to.
    pub base_dir: PathBuf,
    /// The agents, in file order.
    pub agents: Vec<AgentSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    agents: Vec<AgentSpec>,
}

impl AgentFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<AgentFile, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<AgentFile, RegistryError> {
        let err = |line: usize, column: usize, message: String| RegistryError {
            path: path.to_owned(),
            line,
            column,
            message,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let doc: Doc = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = inner.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            let msg = msg
                .strip_prefix(&format!("{key}: "))
                .map(str::to_owned)
                .unwrap_or(msg);
            if key == "." {
                err(line, column, msg)
            } else {
                err(line, column, format!("{key}: {msg}"))
            }
        })?;
        if let Some(issue) = check(&doc.agents).into_iter().next() {
            let (line, column) = locate(
                text,
                issue.index,
                issue.field.split(['.', '[']).next().unwrap_or(""),
            );
            return Err(err(
                line,
                column,
                format!("agents[{}].{}: {}", issue.index, issue.field, issue.message),
            ));
        }
        Ok(AgentFile {
            path: path.to_owned(),
            base_dir: path.parent().map(Path::to_owned).unwrap_or_default(),
            agents: doc.agents,
        })
    }
}

/// Finds where agent `index` (the index-th item of the `agents:` list) writes `field`,
/// or the item itself when the field is absent.
fn locate(text: &str, index: usize, field: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(list_at) = lines
        .iter()
        .position(|l| l.trim_start().starts_with("agents:"))
    else {
        return (1, 1);
    };
    // Items are lines whose first non-space characters are "- " at the list's indent.
    let mut items = Vec::new();
    let mut indent = None;
    for (n, l) in lines.iter().enumerate().skip(list_at + 1) {
        let trimmed = l.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let ind = l.len() - trimmed.len();
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(ind);
                    items.push(n);
                }
                Some(i) if i == ind => items.push(n),
                _ => {}
            }
        } else if indent.is_some_and(|i| ind <= i) && !trimmed.starts_with("- ") && ind == 0 {
            break;
        }
    }
    let Some(&start) = items.get(index) else {
        return (list_at + 1, 1);
    };
    let end = items.get(index + 1).copied().unwrap_or(lines.len());
    for (n, l) in lines.iter().enumerate().take(end).skip(start) {
        let t = l.trim_start().trim_start_matches("- ");
        if !field.is_empty() && t.starts_with(&format!("{field}:")) {
            return (n + 1, l.len() - t.len() + 1);
        }
    }
    let l = lines[start];
    (start + 1, l.len() - l.trim_start().len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentFile, RegistryError> {
        AgentFile::parse(Path::new("agents.yaml"), text)
    }

    #[test]
    fn the_shared_dataset_registry_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/agents.yaml");
        let f = AgentFile::load(&path).unwrap();
        assert_eq!(f.agents.len(), 8);
        let dbt = f.agents.iter().find(|a| a.handle() == "dean.dbt").unwrap();
        assert_eq!(dbt.shown_name(), "Dean (dbt)");
        assert_eq!(dbt.parent.as_ref().unwrap().as_str(), "agent:dean");
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let e =
            parse("agents:\n  - id: agent:dean\n    name: Dean\n    colour: blue\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 5), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        assert!(e.to_string().starts_with("agents.yaml:4:5:"), "{e}");
    }

    #[test]
    fn bad_ids_name_the_field() {
        let e = parse("agents:\n  - id: agent:Dean\n    name: Dean\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("agents[0].id:"), "{e}");
    }

    #[test]
    fn semantic_problems_point_at_the_field() {
        let text = "agents:\n  - id: agent:sage\n    name: Sage\n  - id: agent:dean.dbt\n    name: dbt\n    parent: agent:dean\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.column), (6, 5), "{e}");
        assert_eq!(
            e.message,
            "agents[1].parent: agent:dean is not a defined agent"
        );
        let text = "agents:\n  - id: agent:dean\n    name: Dean\n  - id: agent:dean\n    name: Dean again\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.column), (4, 5), "{e}");
        assert!(e.message.contains("defined twice"), "{e}");
    }

    #[test]
    fn secrets_in_tools_must_be_references() {
        let text = "agents:\n  - id: agent:dean\n    name: Dean\n    tools:\n      database:\n        url: postgres://dean:pw@db/w\n";
        let e = parse(text).unwrap_err();
        assert!(
            e.message.starts_with("agents[0].tools.database.url:"),
            "{e}"
        );
        assert_eq!(e.line, 4, "{e}");
    }
}
