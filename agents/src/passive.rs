//! Passive monitoring on the floor: the queue between the agent actors and the scorer.
//!
//! An agent hands every unaddressed event it reads to [`Passive::submit`] and goes on with
//! its mailbox; one worker thread takes what is queued in batches, runs the first stage on
//! each event and the model on what it lets through (each event once, however many agents
//! asked), and hands each agent its score back. Nothing here is on the floor's commit path.
//! The queue is bounded: when it is full the oldest job is shed (counted in
//! `polaris_passive_shed_total`); mentions never come through here, so they are never shed.
//!
//! With a model, each org's heads are fitted by a second thread, in the background, as
//! soon as the host plans the org's agents ([`Passive::prepare`]: at start and after every
//! reload), so nothing waits for the fit before serving. Until an org's heads are fitted,
//! the first stage answers what it can decide (a precise signal, an event too short to be
//! anyone's) at once, and the events only the model can decide wait for the heads, then
//! are scored with them: none is dropped or half-scored because it came early.
//! `polaris_passive_ready` (and [`Passive::readiness`]) says whether every org's heads are
//! fitted.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use polaris_passive::{Embedder, Input, Profile, Score, Scorer, Stage};
use polaris_registry::AgentSpec;
use uuid::Uuid;

use crate::intent::Intents;
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
/// The longest rest after one batch (a batch that took unusually long is not paid back in
/// full).
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

/// How far one version of an org's definitions is with its heads.
enum Fit {
    /// No model: the first stage is all there is.
    NoModel,
    /// Queued for the fitter, or being fitted.
    Pending,
    /// Fitted: the two-stage scorer.
    Ready(Arc<Scorer>),
    /// The fit failed (logged): the first stage only.
    Failed,
}

/// One version of an org's definitions (keyed by their fingerprint).
struct Defs {
    org: Arc<str>,
    router: Arc<Router>,
    base_dir: PathBuf,
    /// The first stage alone, built by the worker when it first needs it.
    first: Option<Arc<Scorer>>,
    fit: Fit,
}

/// Everything the worker, the fitter and the agents share, under one lock (held only to
/// move jobs and read states: scoring and fitting happen outside it).
struct State {
    jobs: VecDeque<Job>,
    /// Jobs whose event needs the model while their definitions' heads are being fitted,
    /// oldest first, with the fingerprint they wait for.
    waiting: VecDeque<(u64, Job)>,
    defs: HashMap<u64, Defs>,
    /// Each org's current definitions, as the host last planned them.
    latest: HashMap<Arc<str>, u64>,
    /// Fingerprints for the fitter, oldest first.
    fits: VecDeque<u64>,
    stopped: bool,
    /// The worker sleeps for want of jobs: only then does a submit wake it (a wake-up is
    /// a system call, and every agent submits every event it reads).
    idle: bool,
}

impl State {
    /// Every org's current definitions have their heads (or there is no model).
    fn ready(&self) -> bool {
        self.latest
            .values()
            .all(|fp| !matches!(self.defs.get(fp).map(|d| &d.fit), Some(Fit::Pending)))
    }

    /// A version of the definitions, registered (and queued for the fitter when there is
    /// a model) if it is new.
    fn register(
        &mut self,
        fp: u64,
        org: &Arc<str>,
        router: &Arc<Router>,
        base_dir: &Path,
        model: bool,
    ) -> &mut Defs {
        if !self.defs.contains_key(&fp) && model {
            self.fits.push_back(fp);
        }
        self.defs.entry(fp).or_insert_with(|| Defs {
            org: org.clone(),
            router: router.clone(),
            base_dir: base_dir.to_path_buf(),
            first: None,
            fit: if model { Fit::Pending } else { Fit::NoModel },
        })
    }
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the worker: jobs queued, or waiting jobs released.
    wake: Condvar,
    /// Wakes the fitter.
    fit_wake: Condvar,
    embedder: Option<Arc<Embedder>>,
    /// The offline brain's intents, made from the embedder when first asked for.
    intents: OnceLock<Option<Arc<Intents>>>,
    /// Jobs shed so far.
    shed: std::sync::atomic::AtomicU64,
    /// Share of time the worker may score while work is queued ([`DUTY`]).
    duty: f64,
    /// Jobs waiting at most ([`QUEUE_CAPACITY`]).
    capacity: usize,
    /// The worker's and the fitter's threads, joined by [`Passive::stop_and_join`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
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

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn threads_mut(&self) -> std::sync::MutexGuard<'_, Vec<std::thread::JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How far passive monitoring is: whether every org's heads are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// The second stage runs (a model is loaded).
    pub model: bool,
    /// Every org's current definitions have their heads fitted (always true without a
    /// model). Until then events that need the model wait; precise signals do not.
    pub ready: bool,
    /// Orgs whose heads are being fitted.
    pub fitting: usize,
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
    /// Starts the worker (and the fitter, with a model). Without an embedder only the
    /// first stage runs.
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
        if p.inner.embedder.is_some() {
            // As configured if the process did this already (`polaris serve` does).
            model_threads_in_the_background(polaris_config::default_model_threads());
        }
        let worker = p.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("passive".into())
            .spawn(move || {
                in_the_background();
                work(&worker)
            });
        match spawned {
            Ok(t) => p.inner.threads_mut().push(t),
            Err(e) => {
                tracing::error!(error = %e, "passive monitoring could not start its worker; no advice will be given")
            }
        }
        if p.inner.embedder.is_some() {
            let fitter = p.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("passive-fit".into())
                .spawn(move || {
                    in_the_background();
                    fit_heads(&fitter)
                });
            match spawned {
                Ok(t) => p.inner.threads_mut().push(t),
                Err(e) => {
                    tracing::error!(error = %e, "passive monitoring could not start its fitter; the first stage only");
                    let mut st = p.inner.lock();
                    st.stopped = true;
                }
            }
        }
        metrics::gauge!("polaris_passive_ready").set(1.0);
        p
    }

    fn unstarted(embedder: Option<Arc<Embedder>>) -> Passive {
        Passive {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    waiting: VecDeque::new(),
                    defs: HashMap::new(),
                    latest: HashMap::new(),
                    fits: VecDeque::new(),
                    stopped: false,
                    idle: false,
                }),
                wake: Condvar::new(),
                fit_wake: Condvar::new(),
                embedder,
                intents: OnceLock::new(),
                shed: std::sync::atomic::AtomicU64::new(0),
                duty: DUTY,
                capacity: QUEUE_CAPACITY,
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether the second stage (the model) runs.
    pub fn has_model(&self) -> bool {
        self.inner.embedder.is_some()
    }

    /// The offline brain's intents by meaning, when a model is loaded (one for the
    /// process: the tools' descriptions are embedded once, when first needed).
    pub fn intents(&self) -> Option<Arc<Intents>> {
        self.inner
            .intents
            .get_or_init(|| {
                self.inner
                    .embedder
                    .clone()
                    .map(|e| Arc::new(Intents::new(e)))
            })
            .clone()
    }

    /// The org's agents as the host plans them now: with a model, their heads are fitted
    /// in the background from now on (at start, and again after a reload), so the first
    /// event does not wait for the whole fit. Cheap: call it on every reconcile.
    pub fn prepare(&self, org: Arc<str>, router: &Arc<Router>, base_dir: &Path) {
        let specs = router.specs();
        if !specs
            .iter()
            .any(|s| s.parent.is_none() && s.passive.enabled)
        {
            return;
        }
        let fp = fingerprint(&specs, base_dir);
        let model = self.has_model();
        let mut st = self.inner.lock();
        if st.latest.get(&org) == Some(&fp) {
            return;
        }
        let known = st.defs.contains_key(&fp);
        st.register(fp, &org, router, base_dir, model);
        if model && !known {
            tracing::info!(org = %org, agents = specs.iter().filter(|s| s.parent.is_none()).count(), "passive monitoring: fitting the agents' heads in the background");
        }
        // Jobs waiting for the heads of the definitions replaced wait for these instead.
        for (w, j) in st.waiting.iter_mut() {
            if j.org == org {
                *w = fp;
            }
        }
        st.latest.insert(org, fp);
        export_ready(&st);
        drop(st);
        self.inner.fit_wake.notify_one();
    }

    /// Whether every org's heads are fitted.
    pub fn readiness(&self) -> Readiness {
        let st = self.inner.lock();
        let fitting = st
            .latest
            .values()
            .filter(|fp| matches!(st.defs.get(*fp).map(|d| &d.fit), Some(Fit::Pending)))
            .count();
        Readiness {
            model: self.has_model(),
            ready: fitting == 0,
            fitting,
        }
    }

    /// Queues a job; when the queue is full the oldest job is shed. Never blocks on the
    /// scorer.
    pub fn submit(&self, job: Job) {
        self.submit_all(vec![job]);
    }

    /// Queues jobs, in order, as [`Passive::submit`] does each.
    pub fn submit_all(&self, jobs: Vec<Job>) {
        let mut st = self.inner.lock();
        let mut shed_now = Vec::new();
        for job in jobs {
            if st.jobs.len() >= self.inner.capacity
                && let Some(old) = st.jobs.pop_front()
            {
                shed_now.push(old);
            }
            st.jobs.push_back(job);
        }
        metrics::gauge!("polaris_passive_queue").set(st.jobs.len() as f64);
        let idle = std::mem::take(&mut st.idle);
        drop(st);
        if idle {
            self.inner.wake.notify_one();
        }
        // Answered outside the lock: each reply reaches an agent's mailbox.
        for old in shed_now {
            shed(&self.inner, old);
        }
    }

    /// Jobs shed since the start.
    pub fn shed(&self) -> u64 {
        self.inner.shed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the worker (after the batch in hand) and the fitter. Jobs still queued or
    /// waiting for heads are dropped unanswered: the agents that asked stop first, and
    /// their read positions still point before those events, so nothing is lost — it is
    /// scored again after a restart. Without this a stopped worker would go on scoring
    /// its queue for whoever starts next in the process.
    pub fn stop(&self) {
        let mut st = self.inner.lock();
        st.stopped = true;
        let dropped = (
            std::mem::take(&mut st.jobs),
            std::mem::take(&mut st.waiting),
        );
        metrics::gauge!("polaris_passive_queue").set(0.0);
        drop(st);
        drop(dropped);
        self.inner.wake.notify_all();
        self.inner.fit_wake.notify_all();
    }

    /// [`Passive::stop`], then waits for the worker and the fitter to finish what they
    /// have in hand (a batch, a fit). Blocks: off the async runtime.
    pub fn stop_and_join(&self) {
        self.stop();
        let threads = std::mem::take(&mut *self.inner.threads_mut());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a passive monitoring thread panicked");
            }
        }
    }
}

/// The agent hears "no score": no advice for that event, and its read position moves on.
fn shed(inner: &Inner, old: Job) {
    (old.reply)(None);
    metrics::counter!("polaris_passive_shed_total").increment(1);
    inner
        .shed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn export_ready(st: &State) {
    metrics::gauge!("polaris_passive_ready").set(if st.ready() { 1.0 } else { 0.0 });
}

/// The cores passive monitoring computes on, once chosen (the last ones of the process's
/// own, see [`on_its_cores`]).
#[cfg(target_os = "linux")]
static CORES: OnceLock<nix::sched::CpuSet> = OnceLock::new();

/// Puts the calling thread in the scheduler's idle class (Linux `SCHED_IDLE`): it runs only
/// on CPU time no other thread of the machine wants, so scoring a flood never slows the
/// floor's commits or anyone's answers; under a steady overload the queue sheds instead.
/// It also keeps to passive monitoring's cores ([`model_threads_in_the_background`]).
/// Threads it starts inherit both (the model's pools are built apart, by
/// [`model_threads_in_the_background`]).
fn in_the_background() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::warn!(error = ?e, "passive monitoring runs at normal priority");
        }
        if let Some(cores) = CORES.get()
            && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), cores)
        {
            tracing::warn!(error = %e, "passive monitoring may compute on every core");
        }
    }
}

/// Chooses passive monitoring's cores: the last `n` of those the process may run on (all
/// of them if it has no more). The idle class alone is not enough: a model computing on
/// every core fills each core's idle moments, and its caches, and the floor's threads find
/// them cold — measured on two cores, ingest under a flood with four agents watching fell
/// to 0.73–0.78 of ingest without agents with the model on both cores, 0.86–0.88 with it on
/// one. Called once, before any of its threads start.
fn on_its_cores(n: usize) {
    #[cfg(target_os = "linux")]
    {
        use nix::sched::{CpuSet, sched_getaffinity};
        let mine = match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the process's cores cannot be read; passive monitoring may compute on every core");
                return;
            }
        };
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| mine.is_set(c).unwrap_or(false))
            .collect();
        if n >= allowed.len() {
            return;
        }
        let mut cores = CpuSet::new();
        for &c in &allowed[allowed.len() - n..] {
            let _ = cores.set(c);
        }
        let _ = CORES.set(cores);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = n;
}

/// Builds the thread pools the model computes on ([`polaris_passive::start_model_threads`])
/// in the idle class — once per process, before anything else can build them. Each is made
/// by whichever thread first computes and its threads inherit that thread's class: left to
/// chance, a first question to the offline brain's intents (an agent's thread, normal
/// class) would make every later scoring batch, and the pools' spinning between
/// operations, compete with the floor's commits. The cost: under a flood that takes every
/// core, an answer whose intent the model has to find waits for idle time too
/// (milliseconds of work).
///
/// The pools, and passive monitoring's own threads, keep to `cores` of the machine's cores
/// (`passive.threads`; [`polaris_config::default_model_threads`]: half of them): whatever
/// the model is doing, the floor has the others to itself.
pub fn model_threads_in_the_background(cores: usize) {
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        on_its_cores(cores);
        let started = std::thread::Builder::new()
            .name("passive-pools".into())
            .spawn(move || {
                in_the_background();
                polaris_passive::start_model_threads(cores);
            })
            .map(|t| t.join());
        if !matches!(started, Ok(Ok(()))) {
            tracing::warn!("the model's thread pools could not be started in the background; they run at normal priority");
        }
    });
}

/// The fitter: fits the heads of each version of definitions it is handed, one at a
/// time, then releases the jobs that waited for them.
fn fit_heads(inner: &Inner) {
    let Some(embedder) = inner.embedder.clone() else {
        return;
    };
    loop {
        let (fp, org, router, base_dir) = {
            let mut st = inner.lock();
            loop {
                if st.stopped {
                    return;
                }
                let Some(fp) = st.fits.pop_front() else {
                    st = inner.fit_wake.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                };
                let Some(d) = st.defs.get(&fp) else { continue };
                // Replaced by a reload before its turn, and nobody waits for it.
                let stale = st.latest.get(&d.org).is_some_and(|l| *l != fp)
                    && !st.waiting.iter().any(|(w, _)| *w == fp);
                if stale {
                    st.defs.remove(&fp);
                    continue;
                }
                break (fp, d.org.clone(), d.router.clone(), d.base_dir.clone());
            }
        };
        let span = tracing::info_span!("passive_fit", org = %org);
        let _g = span.enter();
        let started = std::time::Instant::now();
        let specs: Vec<AgentSpec> = router.specs().into_iter().cloned().collect();
        let fit = match scorer(&specs, &base_dir, Some(embedder.clone())) {
            Ok(s) => {
                tracing::info!(org = %org, agents = s.agents().count(), ms = started.elapsed().as_millis() as u64, "passive monitoring: heads fitted; the model scores from now on");
                metrics::counter!("polaris_passive_fits_total", "outcome" => "fitted").increment(1);
                Fit::Ready(Arc::new(s))
            }
            Err(e) => {
                tracing::error!(org = %org, error = %e, "passive monitoring: heads not fitted; the first stage only in this org");
                metrics::counter!("polaris_passive_fits_total", "outcome" => "failed").increment(1);
                Fit::Failed
            }
        };
        let mut st = inner.lock();
        if let Some(d) = st.defs.get_mut(&fp) {
            d.fit = fit;
        }
        // The jobs that waited go back to the front of the queue, in their order.
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.waiting)
            .into_iter()
            .partition(|(w, _)| *w == fp);
        st.waiting = rest;
        for (_, j) in mine.into_iter().rev() {
            st.jobs.push_front(j);
        }
        // Older versions of this org's definitions that nobody waits for are done with.
        if st.latest.get(&org) == Some(&fp) {
            let waited: Vec<u64> = st.waiting.iter().map(|(w, _)| *w).collect();
            st.defs
                .retain(|k, d| *k == fp || d.org != org || waited.contains(k));
        }
        export_ready(&st);
        drop(st);
        inner.wake.notify_one();
    }
}

/// The worker's cache: recent final scores by definitions and event, so agents that read
/// an event at different times share one.
#[derive(Default)]
struct Cache {
    results: HashMap<(u64, Uuid), Arc<Vec<Score>>>,
    /// Fingerprints of the routers seen lately (computing one serialises every spec).
    fps: Vec<(std::sync::Weak<Router>, PathBuf, u64)>,
}

impl Cache {
    fn fingerprint(&mut self, router: &Arc<Router>, base_dir: &Path) -> u64 {
        if let Some((_, _, fp)) = self
            .fps
            .iter()
            .find(|(r, b, _)| std::ptr::eq(r.as_ptr(), Arc::as_ptr(router)) && b == base_dir)
        {
            return *fp;
        }
        let fp = fingerprint(&router.specs(), base_dir);
        self.fps.retain(|(r, _, _)| r.strong_count() > 0);
        self.fps
            .push((Arc::downgrade(router), base_dir.to_path_buf(), fp));
        fp
    }
}

fn work(inner: &Inner) {
    let mut cache = Cache::default();
    loop {
        let batch: Vec<Job> = {
            let mut st = inner.lock();
            while st.jobs.is_empty() && !st.stopped {
                st.idle = true;
                st = inner.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.idle = false;
            if st.stopped {
                return;
            }
            let n = st.jobs.len().min(BATCH);
            let batch = st.jobs.drain(..n).collect();
            metrics::gauge!("polaris_passive_queue").set(st.jobs.len() as f64);
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
    let mut st = inner.lock();
    while !st.stopped {
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        st = inner
            .wake
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// The scorer for one version of definitions, and whether its scores are final (`false`
/// while the heads are being fitted: the first stage only, for now).
fn scorer_for(inner: &Inner, fp: u64, job: &Job) -> (Arc<Scorer>, bool) {
    let model = inner.embedder.is_some();
    let (first, settled) = {
        let mut st = inner.lock();
        let d = st.register(fp, &job.org, &job.router, &job.base_dir, model);
        let settled = match &d.fit {
            Fit::Ready(s) => return (s.clone(), true),
            Fit::Pending => false,
            Fit::NoModel | Fit::Failed => true,
        };
        (d.first.clone(), settled)
    };
    if model {
        inner.fit_wake.notify_one();
    }
    let first = match first {
        Some(s) => s,
        None => {
            let specs: Vec<AgentSpec> = job.router.specs().into_iter().cloned().collect();
            let s = Arc::new(Scorer::first_stage(
                profiles(&specs, &job.base_dir),
                names(&specs),
            ));
            let mut st = inner.lock();
            if let Some(d) = st.defs.get_mut(&fp) {
                d.first = Some(s.clone());
            }
            s
        }
    };
    (first, settled)
}

fn run_batch(inner: &Inner, cache: &mut Cache, batch: Vec<Job>) {
    // An org's events are scored against its current definitions, whatever router the
    // agent had when it read them (a reload may have come in between).
    let latest: HashMap<Arc<str>, u64> = {
        let st = inner.lock();
        batch
            .iter()
            .filter_map(|j| st.latest.get(&j.org).map(|fp| (j.org.clone(), *fp)))
            .collect()
    };
    let mut groups: Vec<(u64, Vec<Job>)> = Vec::new();
    for j in batch {
        let fp = match latest.get(&j.org) {
            Some(fp) => *fp,
            None => cache.fingerprint(&j.router, &j.base_dir),
        };
        match groups.iter_mut().find(|(f, _)| *f == fp) {
            Some((_, g)) => g.push(j),
            None => groups.push((fp, vec![j])),
        }
    }
    for (fp, jobs) in groups {
        let (scorer, settled) = scorer_for(inner, fp, &jobs[0]);
        let org = jobs[0].org.clone();
        let mut todo: Vec<(Uuid, &str, bool)> = Vec::new();
        for j in &jobs {
            if !cache.results.contains_key(&(fp, j.event)) && !todo.iter().any(|t| t.0 == j.event) {
                todo.push((j.event, &j.text, j.tool_output));
            }
        }
        let mut fresh: HashMap<Uuid, Arc<Vec<Score>>> = HashMap::new();
        if !todo.is_empty() {
            let span = tracing::info_span!("passive_score", org = %org, events = todo.len(), model = scorer.has_model());
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
                    for ((id, _, _), s) in todo.iter().zip(scores) {
                        fresh.insert(*id, Arc::new(s));
                    }
                    metrics::counter!("polaris_passive_scored_total").increment(todo.len() as u64);
                }
                Err(e) => tracing::error!(error = %e, "passive scoring failed for a batch"),
            }
        }
        if settled {
            if cache.results.len() + fresh.len() > RESULTS_KEPT {
                cache.results.clear();
            }
            for (id, s) in &fresh {
                cache.results.insert((fp, *id), s.clone());
            }
        }
        let mut later: Vec<Job> = Vec::new();
        for j in jobs {
            let s = cache
                .results
                .get(&(fp, j.event))
                .or_else(|| fresh.get(&j.event))
                .and_then(|all| all.iter().find(|s| s.agent == j.agent).cloned());
            // What only the model can decide waits for the heads; signals and discards
            // are final at once.
            if !settled && s.as_ref().is_some_and(|s| s.stage == Stage::NoModel) {
                later.push(j);
            } else {
                (j.reply)(s);
            }
        }
        if !later.is_empty() {
            park(inner, fp, later);
        }
    }
}

/// Jobs that wait for the heads of `fp`: kept until the fitter is done with them, or put
/// back in the queue at once if it already is.
fn park(inner: &Inner, fp: u64, jobs: Vec<Job>) {
    let mut st = inner.lock();
    let fitting = matches!(st.defs.get(&fp).map(|d| &d.fit), Some(Fit::Pending));
    if !fitting {
        for j in jobs.into_iter().rev() {
            st.jobs.push_front(j);
        }
        drop(st);
        inner.wake.notify_one();
        return;
    }
    for j in jobs {
        if st.waiting.len() >= inner.capacity
            && let Some((_, old)) = st.waiting.pop_front()
        {
            shed(inner, old);
        }
        st.waiting.push_back((fp, j));
    }
}

fn fingerprint(specs: &[&AgentSpec], base_dir: &Path) -> u64 {
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

    /// With a model, an event only the model can place waits for the heads (fitted in the
    /// background after `prepare`) instead of being scored by the first stage alone; a
    /// precise signal needs no heads.
    #[test]
    fn what_needs_the_model_waits_for_the_heads() {
        let Some(model) = crate::intent::tests::model() else {
            return;
        };
        let spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "id": "agent:dean", "name": "Dean",
            "description": "Data engineering: SQL, warehouses, dbt models and data pipelines.",
            "passive": {"signals": ["secrets"]},
            "examples": {
                "mine": [
                    "the nightly warehouse load failed and the revenue table is empty",
                    "this query does a sequential scan on orders even with an index",
                    "add a uniqueness test on order_id in the dbt schema file",
                ],
                "not_mine": [
                    "who is bringing cake on Friday?",
                    "the login button is misaligned on mobile",
                ],
            },
        }))
        .unwrap();
        let router = Arc::new(Router::new(&[spec]));
        let p = Passive::start(Some(model));
        p.prepare("default".into(), &router, Path::new("."));
        let (tx, rx) = mpsc::channel();
        for (n, text) in [
            (1, "deploying with AKIAZ3MBKQ7XJ2LRWN4P in the script"),
            (
                2,
                "the daily orders rollup in the warehouse double counts refunds",
            ),
        ] {
            let tx = tx.clone();
            p.submit(Job {
                org: "default".into(),
                router: router.clone(),
                base_dir: PathBuf::from("."),
                event: Uuid::from_u128(n),
                text: text.into(),
                tool_output: false,
                agent: "agent:dean".into(),
                reply: Box::new(move |s| tx.send((n, s)).unwrap()),
            });
        }
        let wait = std::time::Duration::from_secs(120);
        let mut got: Vec<(u128, Option<Score>)> =
            (0..2).map(|_| rx.recv_timeout(wait).unwrap()).collect();
        got.sort_by_key(|g| g.0);
        let stage = |i: usize| got[i].1.as_ref().map(|s| s.stage);
        assert_eq!(stage(0), Some(Stage::Signal));
        assert_eq!(stage(1), Some(Stage::Model), "scored by the model: {got:?}");
        assert!(p.readiness().ready && p.readiness().model);
        p.stop();
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
