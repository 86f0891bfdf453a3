//! Who is calling: bearer tokens (HS256 JWTs with the original's claims) and the caller
//! they resolve to.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use polaris_config::Secret;
use polaris_registry::ParticipantId;
use serde::{Deserialize, Serialize};

/// Issuer of every token (reference 3.2).
pub const ISSUER: &str = "polaris";

/// The org anonymous callers act in when development mode is on.
pub const DEFAULT_ORG: &str = "default";

/// What a caller may do beyond its own identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Acts as itself (and its subagents, and coding agents working for it).
    #[default]
    Member,
    /// May also change project visibility and members.
    Admin,
    /// A trusted service (Slack bridge, agent host): may post as any participant.
    Service,
}

/// The authenticated (or anonymous) caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The org every query is scoped to.
    pub org: Arc<str>,
    /// Who, or `None` for an anonymous caller in development mode.
    pub participant: Option<ParticipantId>,
    /// Extra rights.
    pub role: Role,
}

impl Caller {
    /// The anonymous development-mode caller.
    pub fn anonymous() -> Caller {
        Caller {
            org: DEFAULT_ORG.into(),
            participant: None,
            role: Role::Member,
        }
    }

    /// A caller acting as `who` in `org` (in-process agents, tests).
    pub fn participant(org: &str, who: ParticipantId, role: Role) -> Caller {
        Caller {
            org: org.into(),
            participant: Some(who),
            role,
        }
    }

    /// True for the anonymous development-mode caller, who is trusted like an admin:
    /// it only exists on a loopback listener with no secret configured.
    pub fn is_anonymous(&self) -> bool {
        self.participant.is_none()
    }

    /// May change visibility and membership.
    pub fn is_admin(&self) -> bool {
        self.is_anonymous() || matches!(self.role, Role::Admin | Role::Service)
    }

    /// May this caller post an event whose sender is `sender`? A human posts as itself
    /// and as the coding agents (`agent:*`) working in its sessions; an agent posts as
    /// itself and its subagents. Nobody posts as another human or a Slack user, except a
    /// service (the Slack bridge, an agent host) or the anonymous development caller.
    pub fn may_post_as(&self, sender: &ParticipantId) -> bool {
        match &self.participant {
            None => true,
            Some(_) if self.role == Role::Service => true,
            Some(me) if me.is_agent() => sender.is_within(me),
            Some(me) => sender == me || sender.is_agent(),
        }
    }
}

/// Token claims (reference 3.2, plus `role`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, always `polaris`.
    pub iss: String,
    /// Subject: a user id (the participant id for tokens minted by `polaris token`).
    pub sub: String,
    /// The org.
    pub org_id: String,
    /// The participant the token acts as.
    pub participant_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// E-mail, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Extra rights.
    #[serde(default)]
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, expired, wrong issuer, malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The claims are well-signed but unusable.
    #[error("invalid token claims: {0}")]
    Claims(String),
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys([redacted])")
    }
}

impl TokenKeys {
    /// Keys for an HS256 secret.
    pub fn new(secret: &Secret) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Mints a token for `participant` in `org`, valid for `ttl`.
    pub fn mint(
        &self,
        org: &str,
        participant: &ParticipantId,
        role: Role,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: participant.to_string(),
            org_id: org.into(),
            participant_id: participant.to_string(),
            name: polaris_registry::Persona::of(participant, None, None).name,
            email: None,
            role,
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Checks a token and resolves its caller. Unlike the original, the participant id
    /// claim must follow the grammar and the org must be non-empty.
    pub fn verify(&self, token: &str) -> Result<(Caller, Claims), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        let who = ParticipantId::parse(&c.participant_id)
            .map_err(|e| TokenError::Claims(format!("participant_id: {e}")))?;
        if c.org_id.is_empty() || c.org_id.len() > 128 {
            return Err(TokenError::Claims(
                "org_id must be 1 to 128 characters".into(),
            ));
        }
        Ok((
            Caller {
                org: c.org_id.as_str().into(),
                participant: Some(who),
                role: c.role,
            },
            c,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&Secret::new("0123456789abcdef0123456789abcdef".into()))
    }

    #[test]
    fn minted_tokens_verify() {
        let k = keys();
        let who = ParticipantId::parse("user:manu").unwrap();
        let t = k
            .mint("acme", &who, Role::Admin, Duration::from_secs(60))
            .unwrap();
        let (caller, claims) = k.verify(&t).unwrap();
        assert_eq!(&*caller.org, "acme");
        assert_eq!(caller.participant, Some(who));
        assert_eq!(caller.role, Role::Admin);
        assert_eq!(claims.iss, "polaris");
        assert_eq!(claims.name, "Manu");
    }

    #[test]
    fn other_secrets_and_expired_tokens_fail() {
        let who = ParticipantId::parse("user:manu").unwrap();
        let other = TokenKeys::new(&Secret::new("ffffffffffffffffffffffffffffffff".into()));
        let t = other
            .mint("acme", &who, Role::Member, Duration::from_secs(60))
            .unwrap();
        assert!(keys().verify(&t).is_err());
        assert!(keys().verify("not.a.token").is_err());
    }

    #[test]
    fn posting_rights() {
        let me = Caller::participant(
            "o",
            ParticipantId::parse("user:manu").unwrap(),
            Role::Member,
        );
        let p = |s: &str| ParticipantId::parse(s).unwrap();
        assert!(me.may_post_as(&p("user:manu")));
        assert!(me.may_post_as(&p("agent:claude")));
        assert!(!me.may_post_as(&p("user:alice")));
        assert!(!me.may_post_as(&p("slack:alice")));
        let dean = Caller::participant("o", p("agent:dean"), Role::Member);
        assert!(dean.may_post_as(&p("agent:dean.dbt")));
        assert!(!dean.may_post_as(&p("agent:sage")));
        assert!(Caller::anonymous().may_post_as(&p("user:alice")));
    }
}
