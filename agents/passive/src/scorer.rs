//! The two-stage scorer: the first stage ([`crate::stage1`]) on every event, the model
//! only on what it lets through, in batches.

use std::sync::Arc;

use polaris_registry::{AgentSpec, PassiveSignal};
use serde::Serialize;

use crate::embed::{Embedder, ModelError};
use crate::head::{Head, Row};
use crate::stage1::{self, Prepared};

/// Weight of a definition sentence (description, skills, a knowledge paragraph) beside a
/// written example: it says what the domain is, not how its events read.
const DEFINITION_WEIGHT: f32 = 0.5;
/// Longest knowledge paragraph kept per agent.
const KNOWLEDGE_PARAGRAPHS: usize = 40;

/// What passive monitoring knows of one top-level agent.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The agent's id (`agent:sage`).
    pub id: String,
    /// Its definition: description, skills, knowledge paragraphs.
    pub definition: Vec<String>,
    /// Written examples of its events.
    pub mine: Vec<String>,
    /// Written examples of events that are not its own.
    pub not_mine: Vec<String>,
    /// Precise signals that make an event its own.
    pub signals: Vec<PassiveSignal>,
    /// Score needed to speak up.
    pub threshold: f32,
}

impl Profile {
    /// The profile of `spec`, with the paragraphs of its knowledge documents.
    pub fn from_spec(spec: &AgentSpec, knowledge: Vec<String>) -> Profile {
        let mut definition = Vec::new();
        if !spec.description.trim().is_empty() {
            definition.push(spec.description.clone());
        }
        if !spec.skills.is_empty() {
            definition.push(spec.skills.join(", "));
        }
        definition.extend(knowledge.into_iter().take(KNOWLEDGE_PARAGRAPHS));
        Profile {
            id: spec.id.to_string(),
            definition,
            mine: spec.examples.mine.clone(),
            not_mine: spec.examples.not_mine.clone(),
            signals: spec.passive.signals.clone(),
            threshold: spec.passive_threshold,
        }
    }
}

/// How a score was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A precise signal of the first stage.
    Signal,
    /// The first stage discarded the event.
    Discarded,
    /// The model's head.
    Model,
    /// No model loaded: only the first stage ran.
    NoModel,
}

/// One agent's score for one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The agent.
    pub agent: String,
    /// 0..=1.
    pub score: f32,
    /// Whether it reaches the agent's threshold.
    pub fires: bool,
    /// Which stage decided.
    pub stage: Stage,
    /// Why, in a few words (a signal's reason, or the nearest written example). Never a
    /// secret.
    pub why: String,
}

/// One event to score: its text and whether it is a tool's output.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The event's text.
    pub text: &'a str,
    /// A tool call or its output (failing-job signals apply to these only).
    pub tool_output: bool,
}

struct Fitted {
    embedder: Arc<Embedder>,
    heads: Vec<Head>,
    /// Each agent's own examples with their embeddings (for the `why`).
    nearest: Vec<Vec<(String, Vec<f32>)>>,
}

/// Scores events against every profile.
pub struct Scorer {
    profiles: Vec<Profile>,
    names: Vec<String>,
    model: Option<Fitted>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field(
                "agents",
                &self.profiles.iter().map(|p| &p.id).collect::<Vec<_>>(),
            )
            .field("model", &self.model.is_some())
            .finish()
    }
}

impl Scorer {
    /// A scorer over `profiles`. `names` are people's and agents' names that must not count
    /// as topic words. With an embedder, each agent's head is fitted now (a second or two);
    /// without one only the first stage runs.
    pub fn new(
        profiles: Vec<Profile>,
        names: Vec<String>,
        embedder: Option<Arc<Embedder>>,
    ) -> Result<Scorer, ModelError> {
        let model = match embedder {
            Some(e) => Some(fit(&profiles, &names, e)?),
            None => None,
        };
        Ok(Scorer {
            profiles,
            names,
            model,
        })
    }

    /// The first stage alone over `profiles`: what passive monitoring uses while the
    /// heads are being fitted, and without a model. Cheap, and it cannot fail.
    pub fn first_stage(profiles: Vec<Profile>, names: Vec<String>) -> Scorer {
        Scorer {
            profiles,
            names,
            model: None,
        }
    }

    /// The agents scored, in order.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|p| p.id.as_str())
    }

    /// Whether the second stage runs.
    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// The first stage alone (no model): what [`Scorer::score`] starts with.
    pub fn first(&self, input: Input<'_>) -> Prepared {
        stage1::prepare(input.text, input.tool_output, &self.names)
    }

    /// Scores each input for every agent (in [`Scorer::agents`] order). What the first
    /// stage discards or decides by a signal is not embedded; the rest is embedded in one
    /// batch. CPU-bound: run it off any actor's mailbox.
    pub fn score(&self, inputs: &[Input<'_>]) -> Result<Vec<Vec<Score>>, ModelError> {
        let prepared: Vec<Prepared> = inputs.iter().map(|i| self.first(*i)).collect();
        let wanted: Vec<usize> = prepared
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.discard && self.needs_model(p))
            .map(|(i, _)| i)
            .collect();
        let embedded = match &self.model {
            Some(m) if !wanted.is_empty() => {
                let texts: Vec<&str> = wanted.iter().map(|&i| prepared[i].text.as_str()).collect();
                m.embedder.embed(&texts)?
            }
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(inputs.len());
        for (i, p) in prepared.iter().enumerate() {
            let emb = wanted
                .iter()
                .position(|&w| w == i)
                .and_then(|k| embedded.get(k))
                .map(Vec::as_slice);
            out.push(
                self.profiles
                    .iter()
                    .enumerate()
                    .map(|(a, prof)| self.one(a, prof, p, emb))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// True when some agent is left for the model to decide.
    fn needs_model(&self, p: &Prepared) -> bool {
        self.profiles
            .iter()
            .any(|prof| !p.signals.iter().any(|(s, _)| prof.signals.contains(s)))
    }

    fn one(&self, a: usize, prof: &Profile, p: &Prepared, emb: Option<&[f32]>) -> Score {
        let score = |score: f32, stage: Stage, why: String| Score {
            agent: prof.id.clone(),
            score,
            fires: score >= prof.threshold && stage != Stage::Discarded,
            stage,
            why,
        };
        if let Some((_, why)) = p.signals.iter().find(|(s, _)| prof.signals.contains(s)) {
            return score(1.0, Stage::Signal, why.clone());
        }
        if p.discard {
            return score(
                0.0,
                Stage::Discarded,
                "too short to be anyone's domain".into(),
            );
        }
        match (&self.model, emb) {
            (Some(m), Some(e)) => {
                let s = m.heads[a].prob(e);
                let why = m.nearest[a]
                    .iter()
                    .map(|(t, x)| (crate::head::dot(x, e), t))
                    .max_by(|x, y| x.0.total_cmp(&y.0))
                    .map(|(sim, t)| format!("nearest example ({sim:.2}): {}", preview(t)))
                    .unwrap_or_default();
                score(s, Stage::Model, why)
            }
            _ => score(0.0, Stage::NoModel, "no model: first stage only".into()),
        }
    }
}

fn preview(t: &str) -> String {
    let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    match t.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t,
    }
}

/// Embeds every profile's texts and fits one head per agent.
fn fit(
    profiles: &[Profile],
    names: &[String],
    embedder: Arc<Embedder>,
) -> Result<Fitted, ModelError> {
    // (agent, kind, text): kind 0 = definition, 1 = mine, 2 = not mine.
    let mut texts: Vec<(usize, u8, String)> = Vec::new();
    for (a, p) in profiles.iter().enumerate() {
        texts.extend(p.definition.iter().map(|t| (a, 0, t.clone())));
        texts.extend(p.mine.iter().map(|t| (a, 1, stage1::clean(t, names))));
        texts.extend(p.not_mine.iter().map(|t| (a, 2, stage1::clean(t, names))));
    }
    let mut vecs: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let batch: Vec<&str> = chunk.iter().map(|(_, _, t)| t.as_str()).collect();
        vecs.extend(embedder.embed(&batch)?);
    }
    let dim = embedder.dim();
    let mut heads = Vec::new();
    let mut nearest = Vec::new();
    for (a, _) in profiles.iter().enumerate() {
        let own: Vec<&str> = texts
            .iter()
            .filter(|(o, k, _)| *o == a && *k != 2)
            .map(|(_, _, t)| t.as_str())
            .collect();
        let rows: Vec<Row<'_>> = texts
            .iter()
            .zip(&vecs)
            .filter_map(|((o, k, t), x)| {
                let y = *o == a && *k != 2;
                // Another agent's example that is also written as this one's is not a
                // negative here (an event can be two agents' at once).
                if !y && own.contains(&t.as_str()) {
                    return None;
                }
                let weight = if *k == 0 { DEFINITION_WEIGHT } else { 1.0 };
                Some(Row { x, y, weight })
            })
            .collect();
        heads.push(Head::fit(&rows, dim));
        nearest.push(
            texts
                .iter()
                .zip(&vecs)
                .filter(|((o, k, _), _)| *o == a && *k == 1)
                .map(|((_, _, t), x)| (t.clone(), x.clone()))
                .collect(),
        );
    }
    Ok(Fitted {
        embedder,
        heads,
        nearest,
    })
}
