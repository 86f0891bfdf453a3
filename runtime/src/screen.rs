//! The ingest screen: what every event a participant writes passes through in its session
//! actor before the floor commits it. Today that is the project's `redact_secrets` policy
//! (`polaris_protocol::redaction`): credentials become typed placeholders, so the secret
//! is never written to the store, the search index, a stream or Slack.
//!
//! Policies are cached per project and forgotten when the project changes (here and, by
//! the cluster's notice, on every other node). The org's hash key never changes once made,
//! so it is cached for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use polaris_protocol::redaction::{self, Redaction};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store::{ProjectKey, Store, StoreError};

/// Screens events before commit; one per runtime, shared by every session actor.
pub(crate) struct Screen {
    store: Store,
    /// `redact_secrets` per project id.
    policies: DashMap<Uuid, bool>,
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
        if let Some(p) = self.policies.get(&project) {
            return Ok(*p);
        }
        let generation = self.generation.load(Ordering::Acquire);
        // A project that is gone has no events to screen; redact to be safe.
        let on = self.store.redacts_secrets(project).await?.unwrap_or(true);
        if self.generation.load(Ordering::Acquire) == generation {
            self.policies.insert(project, on);
        }
        Ok(on)
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
