//! Orgs, the users seen in them, their projects and the projects' members.

use chrono::Utc;
use polaris_registry::ParticipantId;
use uuid::Uuid;

use super::column::{Id, Tags, Time};
use super::{Store, StoreError};
use crate::protocol::{Member, Project, Visibility, to_ms};

/// A user row (for `/team`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct UserRow {
    /// Participant id.
    pub participant_id: String,
    /// Display name.
    pub name: String,
    /// E-mail, if known.
    pub email: Option<String>,
}

/// A `projects` row as every query reads it (`SELECT *` or `p.*`).
#[derive(sqlx::FromRow)]
pub(super) struct ProjectRow {
    id: Id,
    name: String,
    slack_channel_id: Option<String>,
    slack_channel_name: Option<String>,
    visibility: String,
    tags: Tags,
    redact_secrets: bool,
    passive_advice: bool,
    created_at: Time,
}

/// What a project's admins decide about its events, read together (see `screen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policies {
    /// Credentials are redacted before the commit.
    pub redact_secrets: bool,
    /// Agents offer advice unasked.
    pub passive_advice: bool,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Project {
        Project {
            id: r.id.0,
            name: r.name,
            slack_channel_id: r.slack_channel_id,
            slack_channel_name: r.slack_channel_name,
            visibility: if r.visibility == "members" {
                Visibility::Members
            } else {
                Visibility::Org
            },
            tags: r.tags.0,
            redact_secrets: r.redact_secrets,
            passive_advice: r.passive_advice,
            created_at: r.created_at.0,
        }
    }
}

impl Store {
    /// Creates the org if it does not exist.
    pub(crate) async fn ensure_org(&self, org: &str) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "INSERT INTO orgs (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING",
            org,
            Time(Utc::now()),
        )?;
        Ok(())
    }

    /// Records that `who` acted in `org` (creates the org and the user row if needed).
    pub(crate) async fn touch_user(
        &self,
        org: &str,
        who: &ParticipantId,
        name: &str,
    ) -> Result<(), StoreError> {
        self.ensure_org(org).await?;
        execute!(
            self,
            write,
            "INSERT INTO users (org_id, participant_id, name, created_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (org_id, participant_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            org,
            who.as_str(),
            name,
            Time(Utc::now()),
        )?;
        Ok(())
    }

    /// Users of an org, by name.
    pub(crate) async fn list_users(&self, org: &str) -> Result<Vec<UserRow>, StoreError> {
        Ok(fetch!(
            self,
            read,
            fetch_all,
            "SELECT participant_id, name, email FROM users WHERE org_id = $1 ORDER BY name, participant_id",
            org,
        )?)
    }

    /// Every org id.
    pub(crate) async fn list_orgs(&self) -> Result<Vec<String>, StoreError> {
        Ok(fetch!(self, read, scalar fetch_all, "SELECT id FROM orgs ORDER BY id")?)
    }

    /// Creates a project; `Conflict` if the name is taken in the org.
    pub(crate) async fn create_project(
        &self,
        org: &str,
        name: &str,
        tags: &[String],
    ) -> Result<Project, StoreError> {
        self.ensure_org(org).await?;
        let project = Project {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            slack_channel_id: None,
            slack_channel_name: None,
            visibility: Visibility::Org,
            tags: tags.to_vec(),
            redact_secrets: true,
            passive_advice: true,
            created_at: to_ms(Utc::now()),
        };
        let inserted = execute!(
            self,
            write,
            "INSERT INTO projects (id, org_id, name, tags, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org_id, name) DO NOTHING",
            Id(project.id),
            org,
            name,
            Tags(project.tags.clone()),
            Time(project.created_at),
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict("project"));
        }
        Ok(project)
    }

    /// A project by name within an org.
    pub(crate) async fn project_by_name(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        let row: Option<ProjectRow> = fetch!(
            self,
            read,
            fetch_optional,
            "SELECT * FROM projects WHERE org_id = $1 AND name = $2",
            org,
            name,
        )?;
        Ok(row.map(Project::from))
    }

    /// Every project of an org, oldest first.
    pub(crate) async fn list_projects(&self, org: &str) -> Result<Vec<Project>, StoreError> {
        let rows: Vec<ProjectRow> = fetch!(
            self,
            read,
            fetch_all,
            "SELECT * FROM projects WHERE org_id = $1 ORDER BY created_at, name",
            org,
        )?;
        Ok(rows.into_iter().map(Project::from).collect())
    }

    /// Renames a project; `Conflict` if the new name is taken.
    pub(crate) async fn rename_project(
        &self,
        org: &str,
        id: Uuid,
        new_name: &str,
    ) -> Result<(), StoreError> {
        let renamed = execute!(
            self,
            write,
            "UPDATE projects SET name = $1 WHERE id = $2 AND org_id = $3
               AND NOT EXISTS (SELECT 1 FROM projects WHERE org_id = $3 AND name = $1)",
            new_name,
            Id(id),
            org,
        );
        match renamed {
            Ok(0) => Err(StoreError::Conflict("project")),
            Ok(_) => Ok(()),
            // Two renames racing to the same name (PostgreSQL, several nodes): the unique
            // index decides.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict("project"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a project's tags.
    pub(crate) async fn set_tags(&self, id: Uuid, tags: &[String]) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "UPDATE projects SET tags = $1 WHERE id = $2",
            Tags(tags.to_vec()),
            Id(id),
        )?;
        Ok(())
    }

    /// A project's policies (`None`: no such project).
    pub(crate) async fn project_policies(&self, id: Uuid) -> Result<Option<Policies>, StoreError> {
        let row: Option<(bool, bool)> = fetch!(
            self,
            read,
            fetch_optional,
            "SELECT redact_secrets, passive_advice FROM projects WHERE id = $1",
            Id(id),
        )?;
        Ok(row.map(|(redact_secrets, passive_advice)| Policies {
            redact_secrets,
            passive_advice,
        }))
    }

    /// Turns a project's `redact_secrets` policy on or off.
    pub(crate) async fn set_redact_secrets(&self, id: Uuid, on: bool) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "UPDATE projects SET redact_secrets = $1 WHERE id = $2",
            on,
            Id(id),
        )?;
        Ok(())
    }

    /// Turns a project's `passive_advice` switch on or off.
    pub(crate) async fn set_passive_advice(&self, id: Uuid, on: bool) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "UPDATE projects SET passive_advice = $1 WHERE id = $2",
            on,
            Id(id),
        )?;
        Ok(())
    }

    /// The org's key for the hashes of redacted secrets, made on first use. Two nodes
    /// making it at once agree: the first write wins and both read it back.
    pub(crate) async fn redaction_key(&self, org: &str) -> Result<Vec<u8>, StoreError> {
        let fresh: [u8; 32] = rand::random();
        execute!(
            self,
            write,
            "UPDATE orgs SET redaction_key = $1 WHERE id = $2 AND redaction_key IS NULL",
            hex::encode(fresh),
            org,
        )?;
        let key: Option<Option<String>> = fetch!(
            self,
            read,
            scalar fetch_optional,
            "SELECT redaction_key FROM orgs WHERE id = $1",
            org,
        )?;
        let key = key
            .flatten()
            .ok_or_else(|| StoreError::Corrupt(format!("org {org} has no redaction key")))?;
        hex::decode(&key).map_err(|_| StoreError::Corrupt(format!("org {org}: bad redaction key")))
    }

    /// Sets who may see a project.
    pub(crate) async fn set_visibility(&self, id: Uuid, v: Visibility) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "UPDATE projects SET visibility = $1 WHERE id = $2",
            v.as_str(),
            Id(id),
        )?;
        Ok(())
    }

    /// Adds a member or replaces its role.
    pub(crate) async fn add_member(
        &self,
        project: Uuid,
        who: &str,
        role: Option<&str>,
    ) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "INSERT INTO project_members (project_id, participant_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, participant_id) DO UPDATE SET role = excluded.role",
            Id(project),
            who,
            role,
        )?;
        Ok(())
    }

    /// Removes a member (no error if absent).
    pub(crate) async fn remove_member(&self, project: Uuid, who: &str) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "DELETE FROM project_members WHERE project_id = $1 AND participant_id = $2",
            Id(project),
            who,
        )?;
        Ok(())
    }

    /// Members, by participant id.
    pub(crate) async fn list_members(&self, project: Uuid) -> Result<Vec<Member>, StoreError> {
        let rows: Vec<(String, Option<String>)> = fetch!(
            self,
            read,
            fetch_all,
            "SELECT participant_id, role FROM project_members WHERE project_id = $1 ORDER BY participant_id",
            Id(project),
        )?;
        Ok(rows
            .into_iter()
            .map(|(participant_id, role)| Member {
                participant_id,
                role,
            })
            .collect())
    }
}
