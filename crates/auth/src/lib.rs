//! Who is asking, and what they may ask for: the principal behind a request, built only from a
//! verified access token.
//!
//! A request is allowed when three tests pass (see `docs/specs/access-control.md`): the token's
//! SMART scopes ([`scope`]), the principal's role ([`role`]) and the patient's consent, which the
//! store enforces inside its queries. This crate owns the first two and the tokens
//! ([`token`], [`assertion`]); it does no IO and reads no clock.

pub mod assertion;
pub mod role;
pub mod scope;
pub mod token;

pub use role::Role;
pub use scope::{Context, Interaction, Scopes};
pub use token::{AccessClaims, SubjectKind, TokenError};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id or client id.
    pub subject: String,
    /// The registered client the token was issued to.
    pub client_id: String,
    /// User or system.
    pub kind: SubjectKind,
    /// The facility code the principal acts for.
    pub facility: String,
    /// Role.
    pub role: Role,
    /// Granted scopes.
    pub scopes: Scopes,
    /// The token's `jti` (audited; the token itself never is).
    pub token_id: String,
    /// The token's `iat`, seconds (a revocation of its subject refuses tokens issued before).
    pub issued_at: i64,
    /// The token's `exp`, seconds.
    pub expires_at: i64,
}

impl Principal {
    /// The principal of verified claims. A role or scope the token should never have carried
    /// is a rejection.
    pub fn from_claims(claims: AccessClaims) -> Result<Self, TokenError> {
        let role: Role = claims.role.parse().map_err(|_| TokenError::Claim("role"))?;
        let scopes = Scopes::parse(&claims.scope).map_err(|_| TokenError::Claim("scope"))?;
        let contexts: &[Context] = match claims.kind {
            SubjectKind::System => &[Context::System],
            SubjectKind::User => &[Context::User],
        };
        if !scopes.only_contexts(contexts)
            || (role == Role::System) != (claims.kind == SubjectKind::System)
        {
            return Err(TokenError::Claim("scope"));
        }
        Ok(Self {
            subject: claims.sub,
            client_id: claims.client_id,
            kind: claims.kind,
            facility: claims.facility,
            role,
            scopes,
            token_id: claims.jti,
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }

    /// The scope context of this principal's scopes.
    pub fn context(&self) -> Context {
        match self.kind {
            SubjectKind::System => Context::System,
            SubjectKind::User => Context::User,
        }
    }

    /// Scope and role both allow `interaction` on `resource_type`.
    pub fn may(&self, resource_type: &str, interaction: Interaction) -> bool {
        let role_allows = match interaction {
            Interaction::Read | Interaction::Search => self.role.may_read(resource_type),
            Interaction::Create | Interaction::Update | Interaction::Delete => {
                self.role.may_write(resource_type)
            }
        };
        role_allows
            && self
                .scopes
                .allows(self.context(), resource_type, interaction)
    }
}
