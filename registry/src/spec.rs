//! `AgentSpec`: what a named agent is, as written in `agents.yaml` or stored in the
//! `agents` table, and the checks both go through.

use polaris_config::SecretRef;
use serde::{Deserialize, Serialize};

use crate::identity::{ParticipantId, ParticipantKind};

/// Default bound on agent-to-agent answer chains.
pub const DEFAULT_MAX_HOPS: u32 = 3;
/// Default relevance an unaddressed event needs before an agent offers advice.
pub const DEFAULT_PASSIVE_THRESHOLD: f32 = 0.6;

/// A named agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// `agent:<handle>`; a subagent's handle extends its parent's (`agent:dean.dbt`).
    pub id: ParticipantId,
    /// Short name ("Dean").
    pub name: String,
    /// Shown on Slack and in transcripts ("Dean (Data)"); defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An emoji; defaults to 🤖.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// What the agent does.
    #[serde(default)]
    pub description: String,
    /// Topics it knows (used to route to subagents and, later, for passive monitoring).
    #[serde(default)]
    pub skills: Vec<String>,
    /// It joins every floor whose project carries one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// For a subagent: its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParticipantId>,
    /// Memory across floors (`shared`) or one instance per floor (`isolated`).
    #[serde(default)]
    pub context: ContextMode,
    /// What produces its answers.
    #[serde(default)]
    pub brain: Brain,
    /// Markdown documents it answers from: paths or globs, relative to the agents file.
    #[serde(default)]
    pub knowledge: Vec<String>,
    /// Tools and their settings.
    #[serde(default)]
    pub tools: Tools,
    /// Answer rate limits.
    #[serde(default)]
    pub rate: RateSpec,
    /// Longest agent-to-agent chain it takes part in.
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
    /// Relevance needed to speak up unasked (0..=1).
    #[serde(default = "default_passive_threshold")]
    pub passive_threshold: f32,
    /// Passive monitoring: whether the agent speaks up unasked, and the precise signals
    /// that make an event its own outright.
    #[serde(default, skip_serializing_if = "Passive::is_default")]
    pub passive: Passive,
    /// Written examples of events that are (`mine`) and are not (`not_mine`) this agent's
    /// domain; passive monitoring learns its domain from them when it loads.
    #[serde(default, skip_serializing_if = "Examples::is_empty")]
    pub examples: Examples,
    /// Where it runs: inside `polaris serve` (the default) or only as a process of its own
    /// (`polaris agent run`). The floor knows it either way (joins, personas, notices).
    #[serde(default, skip_serializing_if = "Hosting::is_server")]
    pub hosting: Hosting,
}

/// Passive monitoring settings of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passive {
    /// Offers advice unasked (top-level agents only); `false` switches it off.
    pub enabled: bool,
    /// Precise first-stage signals that make an event this agent's whatever its words.
    pub signals: Vec<PassiveSignal>,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            enabled: true,
            signals: Vec::new(),
        }
    }
}

impl Passive {
    fn is_default(&self) -> bool {
        *self == Passive::default()
    }
}

/// A precise signal the first stage of passive scoring finds without a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassiveSignal {
    /// A secret or personal data in the text (the scanner), or a redaction placeholder.
    Secrets,
    /// A failing data job or data test in a tool's output (dbt, Airflow, Spark, …).
    DataJobFailure,
}

/// Written examples of what is and is not an agent's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// Events that are this agent's to speak up about.
    #[serde(default)]
    pub mine: Vec<String>,
    /// Events that look like its domain and are not (traps), or are nobody's.
    #[serde(default)]
    pub not_mine: Vec<String>,
}

impl Examples {
    fn is_empty(&self) -> bool {
        self.mine.is_empty() && self.not_mine.is_empty()
    }
}

/// Where a top-level agent runs (its subagents run with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Hosting {
    /// In `polaris serve`, under the agent's lease.
    #[default]
    Server,
    /// Only in a process of its own; `polaris serve` never runs it.
    External,
}

impl Hosting {
    fn is_server(&self) -> bool {
        *self == Hosting::Server
    }
}

fn default_max_hops() -> u32 {
    DEFAULT_MAX_HOPS
}

fn default_passive_threshold() -> f32 {
    DEFAULT_PASSIVE_THRESHOLD
}

/// The context model (seed design, "Context Model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContextMode {
    /// One instance; memory across every floor it is on.
    #[default]
    Shared,
    /// One instance per floor; nothing crosses floors.
    Isolated,
}

/// What produces an agent's answers: `brain: offline` (the default), or
/// `brain: {kind: llm, endpoint, model, api_key: env:NAME, …}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Brain {
    /// Tools and knowledge documents, no network.
    #[default]
    Offline,
    /// An OpenAI-compatible chat-completions endpoint, with the agent's tools as functions.
    Llm(LlmBrain),
}

/// Default answer budget of the LLM brain, in tokens.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Default model turns (each tool round is one) before the brain answers with what it has.
pub const DEFAULT_MAX_TURNS: u32 = 6;
/// Default wall time for one answer, all turns and retries included.
pub const DEFAULT_LLM_TIMEOUT: &str = "60s";

/// An OpenAI-compatible model (OpenAI, vLLM, Ollama, llama.cpp's server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBrain {
    /// The API's base URL, up to and including its version (`http://localhost:11434/v1`).
    pub endpoint: String,
    /// The model name the endpoint knows.
    pub model: String,
    /// The API key, as a reference (`env:NAME` or `file:PATH`), resolved when used: the key
    /// itself is never written down, logged or returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Sampling temperature (0..=2); the endpoint's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Most tokens the model may write per turn.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Most model turns per answer.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// Wall time for one answer, retries included (`30s`, `2m`).
    #[serde(default = "default_llm_timeout")]
    pub timeout: String,
}

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

fn default_max_turns() -> u32 {
    DEFAULT_MAX_TURNS
}

fn default_llm_timeout() -> String {
    DEFAULT_LLM_TIMEOUT.into()
}

impl LlmBrain {
    /// The wall time for one answer (the default when `timeout` does not parse, which
    /// [`check`] refuses anyway).
    pub fn timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.timeout).unwrap_or(std::time::Duration::from_secs(60))
    }
}

impl Serialize for Brain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tagged<'a> {
            kind: &'static str,
            #[serde(flatten)]
            llm: &'a LlmBrain,
        }
        match self {
            // Written as before, so stored definitions read the same.
            Brain::Offline => s.serialize_str("offline"),
            Brain::Llm(l) => Tagged {
                kind: "llm",
                llm: l,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Brain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Brain, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let (kind, rest) = match v {
            serde_json::Value::String(k) => (k, None),
            serde_json::Value::Object(mut m) => {
                let kind = match m.remove("kind") {
                    Some(serde_json::Value::String(k)) => k,
                    Some(_) => return Err(D::Error::custom("kind: must be offline or llm")),
                    None => return Err(D::Error::custom("missing field `kind` (offline or llm)")),
                };
                (kind, Some(m))
            }
            _ => {
                return Err(D::Error::custom(
                    "expected offline or a map with kind: llm, endpoint and model",
                ));
            }
        };
        match (kind.as_str(), rest) {
            ("offline", None) => Ok(Brain::Offline),
            ("offline", Some(m)) if m.is_empty() => Ok(Brain::Offline),
            ("offline", Some(_)) => Err(D::Error::custom("the offline brain takes no settings")),
            ("llm", Some(m)) => serde_json::from_value(serde_json::Value::Object(m))
                .map(Brain::Llm)
                .map_err(D::Error::custom),
            ("llm", None) => Err(D::Error::custom(
                "an llm brain needs its settings: {kind: llm, endpoint: URL, model: NAME}",
            )),
            (other, _) => Err(D::Error::custom(format!(
                "unknown brain kind {other:?}: expected offline or llm"
            ))),
        }
    }
}

/// Tool settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    /// Read-only inspection of a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseTool>,
    /// Scanning event text for secrets and personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsTool>,
    /// Read access to one local directory (tasks scan it). Only agents defined in the
    /// agents file may have it: the floor never reads a directory an API call names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesTool>,
}

/// A directory an agent may read (and nothing outside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesTool {
    /// The directory, relative to the agents file.
    pub root: String,
}

/// Where the database tool connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTool {
    /// `sqlite:PATH`, a PostgreSQL URL without a password, or a reference to one
    /// (`env:NAME`, `file:PATH`) when it holds a password. A relative SQLite path is
    /// relative to the agents file.
    pub url: String,
    /// For examples and demos: an SQL script that creates the SQLite database when its
    /// file does not exist yet (relative to the agents file). The agent itself only reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// The secret scanner takes no settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretsTool {}

/// Answer rate limits, per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateSpec {
    /// Answers on one floor.
    pub per_floor_per_minute: u32,
    /// Answers across all floors.
    pub per_agent_per_minute: u32,
}

impl Default for RateSpec {
    fn default() -> Self {
        RateSpec {
            per_floor_per_minute: 20,
            per_agent_per_minute: 120,
        }
    }
}

impl AgentSpec {
    /// The handle used in `@mentions` (the id without `agent:`).
    pub fn handle(&self) -> &str {
        self.id.name()
    }

    /// The name shown.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    /// The icon shown.
    pub fn shown_icon(&self) -> &str {
        self.icon.as_deref().unwrap_or("🤖")
    }
}

/// A problem with one field of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIssue {
    /// Which agent (position in the list being checked).
    pub index: usize,
    /// The field, e.g. `parent`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Checks a set of agents: each spec on its own, then ids unique and parents present.
/// Returns every problem found, in order.
pub fn check(specs: &[AgentSpec]) -> Vec<SpecIssue> {
    let mut issues = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        for (field, message) in check_one(s) {
            issues.push(SpecIssue {
                index: i,
                field,
                message,
            });
        }
        if specs[..i].iter().any(|o| o.id == s.id) {
            issues.push(SpecIssue {
                index: i,
                field: "id".into(),
                message: format!("{} is defined twice", s.id),
            });
        }
        if let Some(p) = &s.parent
            && !specs.iter().any(|o| &o.id == p)
        {
            issues.push(SpecIssue {
                index: i,
                field: "parent".into(),
                message: format!("{p} is not a defined agent"),
            });
        }
    }
    issues
}

/// Checks one spec on its own (no cross-agent rules). Returns `(field, message)` pairs.
pub fn check_one(s: &AgentSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |f: &str, m: String| out.push((f.to_owned(), m));
    if s.id.kind() != ParticipantKind::Agent {
        bad("id", format!("{} must be an agent:… id", s.id));
    }
    if s.name.trim().is_empty() || s.name.chars().count() > 64 {
        bad("name", "must be 1 to 64 characters".into());
    }
    if let Some(d) = &s.display_name
        && (d.trim().is_empty() || d.chars().count() > 80)
    {
        bad("display_name", "must be 1 to 80 characters".into());
    }
    if let Some(i) = &s.icon
        && (i.is_empty() || i.chars().count() > 32)
    {
        bad(
            "icon",
            "must be 1 to 32 characters (an emoji or :name:)".into(),
        );
    }
    if s.parent.is_some() && s.hosting != Hosting::Server {
        bad(
            "hosting",
            "is set on the top-level agent only: a subagent runs where its parent runs".into(),
        );
    }
    if s.description.chars().count() > 2000 {
        bad("description", "must be at most 2000 characters".into());
    }
    for (i, sk) in s.skills.iter().enumerate() {
        if sk.trim().is_empty() || sk.chars().count() > 64 {
            bad(&format!("skills[{i}]"), "must be 1 to 64 characters".into());
        }
    }
    for (i, t) in s.tags.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && t.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !ok {
            bad(
                &format!("tags[{i}]"),
                format!("{t:?} must be lowercase letters, digits, '-', '_' or '.'"),
            );
        }
    }
    if let Some(p) = &s.parent {
        if p == &s.id {
            bad("parent", "an agent cannot be its own parent".into());
        } else if !s.id.is_within(p) {
            bad(
                "parent",
                format!(
                    "{p} must be a prefix of the id at a dot ({} would be {p}.<name>)",
                    s.id
                ),
            );
        }
    }
    if let Brain::Llm(l) = &s.brain {
        check_llm(l, &mut bad);
    }
    for (i, k) in s.knowledge.iter().enumerate() {
        if k.trim().is_empty() {
            bad(&format!("knowledge[{i}]"), "must not be empty".into());
        }
    }
    if let Some(db) = &s.tools.database {
        if let Err(m) = check_database_url(&db.url) {
            bad("tools.database.url", m);
        }
        if db.seed.is_some() && !db.url.starts_with("sqlite:") {
            bad(
                "tools.database.seed",
                "only a sqlite: database can be seeded".into(),
            );
        }
    }
    if let Some(f) = &s.tools.files
        && f.root.trim().is_empty()
    {
        bad("tools.files.root", "must not be empty".into());
    }
    if s.rate.per_floor_per_minute == 0 || s.rate.per_agent_per_minute == 0 {
        bad("rate", "limits must be at least 1 per minute".into());
    }
    if !(1..=10).contains(&s.max_hops) {
        bad("max_hops", "must be between 1 and 10".into());
    }
    if !(0.0..=1.0).contains(&s.passive_threshold) {
        bad("passive_threshold", "must be between 0 and 1".into());
    }
    for (list, texts) in [
        ("mine", &s.examples.mine),
        ("not_mine", &s.examples.not_mine),
    ] {
        for (i, t) in texts.iter().enumerate() {
            if t.trim().is_empty() || t.chars().count() > 4000 {
                bad(
                    &format!("examples.{list}[{i}]"),
                    "must be 1 to 4000 characters".into(),
                );
            }
        }
    }
    out
}

/// The LLM brain's settings; messages never repeat `api_key` (it may be a key pasted where
/// a reference belongs).
fn check_llm(l: &LlmBrain, bad: &mut impl FnMut(&str, String)) {
    let e = l.endpoint.trim();
    if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() > 2000 {
        bad(
            "brain.endpoint",
            "must be an http:// or https:// URL (the API base, e.g. http://localhost:11434/v1)"
                .into(),
        );
    }
    if l.model.trim().is_empty() || l.model.chars().count() > 200 {
        bad("brain.model", "must be 1 to 200 characters".into());
    }
    if let Some(k) = &l.api_key
        && SecretRef::parse(k).is_err()
    {
        bad(
            "brain.api_key",
            "must be a reference (env:NAME or file:PATH), never the key itself".into(),
        );
    }
    if l.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        bad("brain.temperature", "must be between 0 and 2".into());
    }
    if !(1..=32_768).contains(&l.max_tokens) {
        bad("brain.max_tokens", "must be between 1 and 32768".into());
    }
    if !(1..=20).contains(&l.max_turns) {
        bad("brain.max_turns", "must be between 1 and 20".into());
    }
    match humantime::parse_duration(&l.timeout) {
        Ok(d)
            if d >= std::time::Duration::from_millis(100)
                && d <= std::time::Duration::from_secs(600) => {}
        _ => bad(
            "brain.timeout",
            "must be a duration from 100ms to 10m, such as 30s".into(),
        ),
    }
}

/// A database URL is a secret when it holds a password: then only a reference may be
/// written down.
fn check_database_url(url: &str) -> Result<(), String> {
    if url.starts_with("env:") || url.starts_with("file:") {
        return SecretRef::parse(url).map(|_| ());
    }
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(
                "holds a password: write a reference instead (env:NAME or file:PATH)".into(),
            );
        }
        return Ok(());
    }
    Err("expected sqlite:PATH, postgres://USER@HOST/DB, env:NAME or file:PATH".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> AgentSpec {
        AgentSpec {
            id: ParticipantId::parse(id).unwrap(),
            name: "X".into(),
            display_name: None,
            icon: None,
            description: String::new(),
            skills: vec![],
            tags: vec![],
            parent: None,
            context: ContextMode::Shared,
            brain: Brain::Offline,
            knowledge: vec![],
            tools: Tools::default(),
            rate: RateSpec::default(),
            max_hops: 3,
            passive_threshold: 0.6,
            passive: Passive::default(),
            examples: Examples::default(),
            hosting: Hosting::Server,
        }
    }

    #[test]
    fn hosting_is_a_top_level_setting() {
        let dean: AgentSpec = serde_json::from_value(serde_json::json!({
            "id": "agent:dean", "name": "Dean", "hosting": "external"}))
        .unwrap();
        assert_eq!(dean.hosting, Hosting::External);
        assert!(check_one(&dean).is_empty());
        // The default is not written out, so stored specs read as before.
        let sean = spec("agent:sean");
        assert!(
            serde_json::to_value(&sean)
                .unwrap()
                .get("hosting")
                .is_none()
        );
        let mut dbt = spec("agent:dean.dbt");
        dbt.parent = Some(ParticipantId::parse("agent:dean").unwrap());
        dbt.hosting = Hosting::External;
        assert_eq!(check_one(&dbt)[0].0, "hosting");
        let bad = serde_json::from_value::<AgentSpec>(serde_json::json!({
            "id": "agent:dean", "name": "Dean", "hosting": "sandbox"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    #[test]
    fn parents_must_exist_and_prefix_the_id() {
        let mut dbt = spec("agent:dean.dbt");
        dbt.parent = Some(ParticipantId::parse("agent:dean").unwrap());
        assert_eq!(check(&[spec("agent:dean"), dbt.clone()]), vec![]);
        let issues = check(&[dbt.clone()]);
        assert_eq!(issues[0].field, "parent");
        let mut wrong = spec("agent:sage.x");
        wrong.parent = Some(ParticipantId::parse("agent:dean").unwrap());
        let issues = check(&[spec("agent:dean"), wrong]);
        assert!(issues[0].message.contains("prefix"), "{issues:?}");
    }

    #[test]
    fn duplicates_users_and_limits() {
        let issues = check(&[spec("agent:dean"), spec("agent:dean")]);
        assert_eq!((issues[0].index, issues[0].field.as_str()), (1, "id"));
        assert_eq!(check(&[spec("user:dean")])[0].field, "id");
        let mut s = spec("agent:x");
        s.max_hops = 0;
        s.passive_threshold = 2.0;
        s.tags = vec!["Data".into()];
        let fields: Vec<String> = check(&[s]).into_iter().map(|i| i.field).collect();
        assert_eq!(fields, ["tags[0]", "max_hops", "passive_threshold"]);
    }

    #[test]
    fn brains_are_offline_or_llm_with_settings() {
        let dean: AgentSpec =
            serde_yaml::from_str("id: agent:dean\nname: Dean\nbrain: offline\n").unwrap();
        assert_eq!(dean.brain, Brain::Offline);
        assert_eq!(serde_json::to_value(&dean).unwrap()["brain"], "offline");
        let yaml = "id: agent:dean\nname: Dean\nbrain:\n  kind: llm\n  endpoint: http://127.0.0.1:8000/v1\n  model: qwen\n  api_key: env:DEAN_KEY\n  temperature: 0.2\n  timeout: 20s\n";
        let dean: AgentSpec = serde_yaml::from_str(yaml).unwrap();
        let Brain::Llm(l) = &dean.brain else {
            panic!("{:?}", dean.brain)
        };
        assert_eq!(
            (l.max_tokens, l.max_turns),
            (DEFAULT_MAX_TOKENS, DEFAULT_MAX_TURNS)
        );
        assert_eq!(l.timeout(), std::time::Duration::from_secs(20));
        assert!(check_one(&dean).is_empty(), "{:?}", check_one(&dean));
        // Round trip through the agents table's JSON.
        let back: AgentSpec = serde_json::from_value(serde_json::to_value(&dean).unwrap()).unwrap();
        assert_eq!(back, dean);
        let bad = serde_yaml::from_str::<AgentSpec>(
            "id: agent:x\nname: X\nbrain: {kind: llm, endpoint: http://x, model: m, mdoel: n}\n",
        );
        assert!(bad.unwrap_err().to_string().contains("mdoel"));
        assert!(serde_yaml::from_str::<AgentSpec>("id: agent:x\nname: X\nbrain: llm\n").is_err());
        let mut x = spec("agent:x");
        x.brain = Brain::Llm(LlmBrain {
            endpoint: "localhost:1".into(),
            model: String::new(),
            api_key: Some("sk-live-1234567890".into()),
            temperature: Some(3.0),
            max_tokens: 0,
            max_turns: 0,
            timeout: "soon".into(),
        });
        let issues = check_one(&x);
        let fields: Vec<&str> = issues.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "brain.endpoint",
                "brain.model",
                "brain.api_key",
                "brain.temperature",
                "brain.max_tokens",
                "brain.max_turns",
                "brain.timeout"
            ]
        );
        assert!(
            issues.iter().all(|(_, m)| !m.contains("sk-live")),
            "{issues:?}"
        );
    }

    #[test]
    fn database_passwords_must_be_references() {
        assert!(check_database_url("sqlite:examples/warehouse.db").is_ok());
        assert!(check_database_url("postgres://dean@db/warehouse").is_ok());
        assert!(check_database_url("env:WAREHOUSE_URL").is_ok());
        assert!(check_database_url("postgres://dean:hunter2@db/warehouse").is_err());
        assert!(check_database_url("mysql://x").is_err());
    }
}
