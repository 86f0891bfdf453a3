//! Passive monitoring on the floor: the queue between the agent actors and the scorer.
//!
//! An agent hands every unaddressed event it reads to [`Passive::submit`] and goes on with
//! its mailbox; one worker thread takes what is queued in batches, runs the first stage on
//! each event and the model on what it lets through (each event once, however many agents
//! asked), and hands each agent its score back. Nothing here is on the floor's commit path.
//! The queue is bounded: when it is full the oldest job is shed (counted in
//! `polaris_passive_shed_total`); mentions never come through here, so they are never shed.
//!
//! Each org's scorer is built from its agents when first needed and again when their
//! definitions change; fitting the heads takes the worker a second or two, never an actor.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use polaris_passive::{Embedder, Input, Profile, Score, Scorer};
use polaris_registry::AgentSpec;
use uuid::Uuid;

use crate::knowledge::KnowledgeBase;
use crate::route::Router;

/// Jobs waiting at most, unless configured (`passive.queue`); beyond this the oldest is
/// shed.
pub const QUEUE_CAPACITY: usize = 1024;
/// Events scored in one batch at most.
const BATCH: usize = 16;
/// Scores kept by event id, so agents that read an event at different times share one.
const RESULTS_KEPT: usize = 4096;
/// The share of time the worker may score while work is queued: after a batch that took
/// `t` it rests `t × (1 − DUTY) / DUTY`. Advice can wait; the floor's ingest must not
/// (the model's matrix products take every core they are given). Under a steady overload
/// the queue then sheds its oldest jobs, as designed.
pub const DUTY: f64 = 0.25;
/// The longest rest after one batch (a batch that took unusually long, e.g. fitting the
/// heads, is not paid back in full).
const MAX_REST: std::time::Duration = std::time::Duration::from_secs(2);

/// What an agent gets back: its score for the event (`None` when the scorer failed).
pub type Reply = Box<dyn FnOnce(Option<Score>) + Send>;

/// One agent's request to score one event.
pub struct Job {
    /// The agent's org.
    pub org: Arc<str>,
    /// The org's agents (the scorer is built from them).
    pub router: Arc<Router>,
    /// Where their knowledge paths start.
    pub base_dir: PathBuf,
    /// The event.
    pub event: Uuid,
    /// Its text.
    pub text: String,
    /// Whether it is a tool call or a tool's output.
    pub tool_output: bool,
    /// The agent asking.
    pub agent: String,
    /// Where its score goes.
    pub reply: Reply,
}

/// The profiles passive monitoring scores against: every top-level agent of `specs`
/// (subagents are reached through their parent), with its knowledge paragraphs.
pub fn profiles(specs: &[AgentSpec], base_dir: &Path) -> Vec<Profile> {
    specs
        .iter()
        .filter(|s| s.parent.is_none())
        .map(|s| {
            let knowledge = match KnowledgeBase::load(base_dir, &s.knowledge) {
                Ok(kb) => kb.passages().map(str::to_owned).collect(),
                Err(e) => {
                    tracing::warn!(agent = %s.id, error = %e, "passive monitoring reads the agent without its knowledge documents");
                    Vec::new()
                }
            };
            Profile::from_spec(s, knowledge)
        })
        .collect()
}

/// Agents' names and handles: words that name someone, not a topic.
pub fn names(specs: &[AgentSpec]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        for n in [s.name.clone(), capitalised(s.handle())] {
            if !n.is_empty() && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A scorer for `specs` (see [`profiles`] and [`names`]).
pub fn scorer(
    specs: &[AgentSpec],
    base_dir: &Path,
    embedder: Option<Arc<Embedder>>,
) -> Result<Scorer, polaris_passive::ModelError> {
    Scorer::new(profiles(specs, base_dir), names(specs), embedder)
}

struct Queue {
    jobs: VecDeque<Job>,
    stopped: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    embedder: Option<Arc<Embedder>>,
    /// Jobs shed so far.
    shed: std::sync::atomic::AtomicU64,
    /// Share of time the worker may score while work is queued ([`DUTY`]).
    duty: f64,
    /// Jobs waiting at most ([`QUEUE_CAPACITY`]).
    capacity: usize,
}

/// How the worker runs: its share of time while work is queued and its queue's bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// The worker's share of time while work is queued (`1.0`: it never rests).
    pub duty: f64,
    /// Jobs waiting at most; beyond this the oldest is shed.
    pub capacity: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            duty: DUTY,
            capacity: QUEUE_CAPACITY,
        }
    }
}

/// The passive monitoring service of one process.
#[derive(Clone)]
pub struct Passive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Passive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passive")
            .field("model", &self.inner.embedder.is_some())
            .finish()
    }
}

impl Passive {
    /// Starts the worker. Without an embedder only the first stage runs.
    pub fn start(embedder: Option<Arc<Embedder>>) -> Passive {
        Passive::start_tuned(embedder, Tuning::default())
    }

    /// As [`Passive::start`], with the worker's share of time while work is queued
    /// (`1.0`: it never rests; for measuring what the rest buys).
    pub fn start_with_duty(embedder: Option<Arc<Embedder>>, duty: f64) -> Passive {
        Passive::start_tuned(
            embedder,
            Tuning {
                duty,
                ..Tuning::default()
            },
        )
    }

    /// As [`Passive::start`], tuned.
    pub fn start_tuned(embedder: Option<Arc<Embedder>>, tuning: Tuning) -> Passive {
        let mut p = Passive::unstarted(embedder);
        if let Some(inner) = Arc::get_mut(&mut p.inner) {
            inner.duty = tuning.duty.clamp(0.01, 1.0);
            inner.capacity = tuning.capacity.max(1);
        }
        let worker = p.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("passive".into())
            .spawn(move || work(&worker));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "passive monitoring could not start its worker; no advice will be given");
        }
        p
    }

    fn unstarted(embedder: Option<Arc<Embedder>>) -> Passive {
        Passive {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    stopped: false,
                }),
                wake: Condvar::new(),
                embedder,
                shed: std::sync::atomic::AtomicU64::new(0),
                duty: DUTY,
                capacity: QUEUE_CAPACITY,
            }),
        }
    }

    /// Whether the second stage (the model) runs.
    pub fn has_model(&self) -> bool {
        self.inner.embedder.is_some()
    }

    /// Queues a job; when the queue is full the oldest job is shed. Never blocks on the
    /// scorer.
    pub fn submit(&self, job: Job) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.jobs.len() >= self.inner.capacity
            && let Some(old) = q.jobs.pop_front()
        {
            // The agent hears "no score": no advice for that event, and its read position
            // moves on.
            (old.reply)(None);
            metrics::counter!("polaris_passive_shed_total").increment(1);
            self.inner
                .shed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        q.jobs.push_back(job);
        metrics::gauge!("polaris_passive_queue").set(q.jobs.len() as f64);
        drop(q);
        self.inner.wake.notify_one();
    }

    /// Jobs shed since the start.
    pub fn shed(&self) -> u64 {
        self.inner.shed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the worker once the queue is empty.
    pub fn stop(&self) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.stopped = true;
        drop(q);
        self.inner.wake.notify_all();
    }
}

/// The worker's cache: a scorer per org (with the fingerprint of the agents it was built
/// from) and recent scores by event.
#[derive(Default)]
struct Cache {
    scorers: HashMap<Arc<str>, (u64, Option<Arc<Scorer>>)>,
    results: HashMap<Uuid, Arc<Vec<Score>>>,
}

fn work(inner: &Inner) {
    let mut cache = Cache::default();
    loop {
        let batch: Vec<Job> = {
            let mut q = inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.jobs.is_empty() && !q.stopped {
                q = inner.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.jobs.is_empty() {
                return;
            }
            let n = q.jobs.len().min(BATCH);
            let batch = q.jobs.drain(..n).collect();
            metrics::gauge!("polaris_passive_queue").set(q.jobs.len() as f64);
            batch
        };
        let started = std::time::Instant::now();
        run_batch(inner, &mut cache, batch);
        let rest = started
            .elapsed()
            .mul_f64((1.0 - inner.duty) / inner.duty)
            .min(MAX_REST);
        rest_unless_stopped(inner, rest);
    }
}

/// Waits `rest`, or less if the worker is told to stop.
fn rest_unless_stopped(inner: &Inner, rest: std::time::Duration) {
    let deadline = std::time::Instant::now() + rest;
    let mut q = inner.queue.lock().unwrap_or_else(|p| p.into_inner());
    while !q.stopped {
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        q = inner
            .wake
            .wait_timeout(q, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn run_batch(inner: &Inner, cache: &mut Cache, batch: Vec<Job>) {
    let mut by_org: HashMap<Arc<str>, Vec<Job>> = HashMap::new();
    for j in batch {
        by_org.entry(j.org.clone()).or_default().push(j);
    }
    for (org, jobs) in by_org {
        let Some(scorer) = scorer_for(inner, cache, &org, &jobs[0]) else {
            for j in jobs {
                (j.reply)(None);
            }
            continue;
        };
        let mut todo: Vec<(Uuid, &str, bool)> = Vec::new();
        for j in &jobs {
            if !cache.results.contains_key(&j.event) && !todo.iter().any(|t| t.0 == j.event) {
                todo.push((j.event, &j.text, j.tool_output));
            }
        }
        if !todo.is_empty() {
            let span = tracing::info_span!("passive_score", org = %org, events = todo.len());
            let _g = span.enter();
            let inputs: Vec<Input<'_>> = todo
                .iter()
                .map(|(_, text, tool_output)| Input {
                    text,
                    tool_output: *tool_output,
                })
                .collect();
            match scorer.score(&inputs) {
                Ok(scores) => {
                    if cache.results.len() + scores.len() > RESULTS_KEPT {
                        cache.results.clear();
                    }
                    for ((id, _, _), s) in todo.iter().zip(scores) {
                        cache.results.insert(*id, Arc::new(s));
                    }
                    metrics::counter!("polaris_passive_scored_total").increment(todo.len() as u64);
                }
                Err(e) => tracing::error!(error = %e, "passive scoring failed for a batch"),
            }
        }
        for j in jobs {
            let s = cache
                .results
                .get(&j.event)
                .and_then(|all| all.iter().find(|s| s.agent == j.agent).cloned());
            (j.reply)(s);
        }
    }
}

fn scorer_for(inner: &Inner, cache: &mut Cache, org: &Arc<str>, job: &Job) -> Option<Arc<Scorer>> {
    let specs: Vec<AgentSpec> = job.router.specs().into_iter().cloned().collect();
    let fp = fingerprint(&specs, &job.base_dir);
    if let Some((f, s)) = cache.scorers.get(org)
        && *f == fp
    {
        return s.clone();
    }
    let built = match scorer(&specs, &job.base_dir, inner.embedder.clone()) {
        Ok(s) => {
            tracing::info!(org = %org, agents = s.agents().count(), model = s.has_model(), "passive scorer ready");
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::error!(org = %org, error = %e, "passive scorer could not be built; no advice in this org");
            None
        }
    };
    // The scores of the old definitions no longer hold.
    cache.results.clear();
    cache.scorers.insert(org.clone(), (fp, built.clone()));
    built
}

fn fingerprint(specs: &[AgentSpec], base_dir: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    base_dir.hash(&mut h);
    for s in specs {
        serde_json::to_string(s).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn job(n: usize, router: &Arc<Router>, tx: &mpsc::Sender<(usize, bool)>) -> Job {
        let tx = tx.clone();
        Job {
            org: "default".into(),
            router: router.clone(),
            base_dir: PathBuf::from("."),
            event: Uuid::from_u128(n as u128 + 1),
            text: format!("AKIAZ3MBKQ7XJ2LRWN4{} was pasted", n % 10),
            tool_output: false,
            agent: "agent:sage".into(),
            reply: Box::new(move |s| {
                tx.send((n, s.is_some())).unwrap();
            }),
        }
    }

    fn sage() -> Arc<Router> {
        let spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "id": "agent:sage", "name": "Sage", "passive": {"signals": ["secrets"]}
        }))
        .unwrap();
        Arc::new(Router::new(&[spec]))
    }

    #[test]
    fn a_full_queue_sheds_its_oldest_jobs() {
        let p = Passive::unstarted(None);
        let router = sage();
        let (tx, rx) = mpsc::channel();
        for n in 0..QUEUE_CAPACITY + 3 {
            p.submit(job(n, &router, &tx));
        }
        assert_eq!(p.shed(), 3);
        let shed: Vec<(usize, bool)> = rx.try_iter().collect();
        assert_eq!(shed, [(0, false), (1, false), (2, false)]);
        // The rest is scored once a worker runs.
        let worker = p.inner.clone();
        let t = std::thread::spawn(move || work(&worker));
        let mut scored: Vec<(usize, bool)> =
            (0..QUEUE_CAPACITY).map(|_| rx.recv().unwrap()).collect();
        scored.sort_unstable();
        assert_eq!(scored.first(), Some(&(3, true)));
        assert!(scored.iter().all(|(_, s)| *s));
        p.stop();
        t.join().unwrap();
    }

    #[test]
    fn names_are_agents_names_and_handles() {
        let specs: Vec<AgentSpec> = serde_json::from_value(serde_json::json!([
            {"id": "agent:dean", "name": "Dean"},
            {"id": "agent:dean.dbt", "name": "dean.dbt", "parent": "agent:dean"}
        ]))
        .unwrap();
        assert_eq!(names(&specs), ["Dean", "dean.dbt", "Dean.dbt"]);
        assert_eq!(
            profiles(&specs, Path::new(".")).len(),
            1,
            "top-level agents only"
        );
    }
}
