//! The ingest screen: what every event a participant writes passes through in its session
//! actor before the floor commits it. Today that is the project's `redact_secrets` policy
//! (`polaris_protocol::redaction`): credentials become typed placeholders, so the secret
//! is never written to the store, the search index, a stream or Slack.
//!
//! Policies are cached per project and forgotten when the project changes (here and, by
//! the cluster's notice, on every other node). The org's hash key never changes once made,
//! so it is cached for good. The project's other per-event switch, `passive_advice` (do
//! agents speak up unasked), is read with it and cached the same way: no event passes
//! through it here, but agents ask it for each event they would score.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use polaris_protocol::redaction::{self, Redaction};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store::{Policies, ProjectKey, Store, StoreError};

/// Screens events before commit; one per runtime, shared by every session actor.
pub(crate) struct Screen {
    store: Store,
    /// Policies per project id.
    policies: DashMap<Uuid, Policies>,
    /// Bumped by every [`Screen::forget`]: a policy read across a change is not cached.
    generation: AtomicU64,
    /// The org's redaction hash key.
    keys: DashMap<Arc<str>, Arc<[u8]>>,
}

impl Screen {
    pub(crate) fn new(store: Store) -> Screen {
        Screen {
            store,
            policies: DashMap::new(),
            generation: AtomicU64::new(0),
            keys: DashMap::new(),
        }
    }

    /// The payload to commit, and what was redacted from it. Fails (and nothing is
    /// committed) when the policy cannot be read: an event must not slip through
    /// unredacted because the store hiccupped.
    #[tracing::instrument(name = "floor.screen", skip_all)]
    pub(crate) async fn payload(
        &self,
        project: &ProjectKey,
        payload: Box<RawValue>,
    ) -> Result<(Box<RawValue>, Vec<Redaction>), StoreError> {
        if !self.redacts(project.id).await? {
            return Ok((payload, Vec::new()));
        }
        let key = self.key(&project.org).await?;
        Ok(match redaction::redact_payload(&payload, &key) {
            Some((clean, found)) => {
                metrics::counter!("polaris_redactions_total").increment(found.len() as u64);
                tracing::info!(
                    project = %project.name,
                    kinds = ?found.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
                    "credentials redacted before commit"
                );
                (clean, found)
            }
            None => (payload, Vec::new()),
        })
    }

    /// Drops the cached policy of a project whose settings changed.
    pub(crate) fn forget(&self, project: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.policies.remove(&project);
    }

    async fn redacts(&self, project: Uuid) -> Result<bool, StoreError> {
        Ok(self.policies(project).await?.redact_secrets)
    }

    /// Whether agents offer advice unasked on the project's events. A read that fails
    /// fails the caller: the agent then gives no advice on that event.
    pub(crate) async fn passive_advice(&self, project: Uuid) -> Result<bool, StoreError> {
        Ok(self.policies(project).await?.passive_advice)
    }

    async fn policies(&self, project: Uuid) -> Result<Policies, StoreError> {
        if let Some(p) = self.policies.get(&project) {
            return Ok(*p);
        }
        let generation = self.generation.load(Ordering::Acquire);
        // A project that is gone has no events to screen; redact to be safe, and advise
        // on nothing.
        let p = self
            .store
            .project_policies(project)
            .await?
            .unwrap_or(Policies {
                redact_secrets: true,
                passive_advice: false,
            });
        if self.generation.load(Ordering::Acquire) == generation {
            self.policies.insert(project, p);
        }
        Ok(p)
    }

    async fn key(&self, org: &Arc<str>) -> Result<Arc<[u8]>, StoreError> {
        if let Some(k) = self.keys.get(org) {
            return Ok(k.clone());
        }
        let key: Arc<[u8]> = self.store.redaction_key(org).await?.into();
        self.keys.insert(org.clone(), key.clone());
        Ok(key)
    }
}
