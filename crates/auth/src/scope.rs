//! SMART App Launch v2 scopes: what a token's holder asked to do, which only ever narrows what
//! role and consent allow.
//!
//! Grammar: `(patient|user|system)/(Type|*).<perms>` where `<perms>` is a non-empty subsequence of
//! `cruds` in that order; the v1 forms `.read` (= `.rs`), `.write` (= `.cud`) and `.*`
//! (= `.cruds`) are accepted. Granular constraints (`?category=…`) are rejected: the server does
//! not enforce them, and a scope the server cannot enforce must not be granted. Non-resource
//! scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`) are kept but grant nothing.

use std::fmt;

/// The context of a resource scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: the patient in context.
    Patient,
    /// `user/`: what the signed-in user may see.
    User,
    /// `system/`: what the registered client may see.
    System,
}

/// One interaction letter of `cruds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `c`.
    Create,
    /// `r`: read, vread, history of one resource.
    Read,
    /// `u`.
    Update,
    /// `d`.
    Delete,
    /// `s`: search, history of a type or the system, operations that search.
    Search,
}

impl Interaction {
    const ORDER: [(char, Interaction); 5] = [
        ('c', Interaction::Create),
        ('r', Interaction::Read),
        ('u', Interaction::Update),
        ('d', Interaction::Delete),
        ('s', Interaction::Search),
    ];
}

/// A resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub context: Context,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    /// The interactions granted.
    pub interactions: Vec<Interaction>,
}

/// A parsed scope string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    /// Resource scopes, in the order given.
    pub resources: Vec<ResourceScope>,
    /// Other scopes (`openid`, `fhirUser`, `launch/patient`, …), granting nothing here.
    pub other: Vec<String>,
}

/// A scope string that cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct ScopeError {
    /// The offending scope.
    pub scope: String,
    /// Why.
    pub reason: &'static str,
}

const MAX_SCOPES: usize = 64;

impl Scopes {
    /// Parses a space-separated scope string.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let mut scopes = Scopes::default();
        for (count, scope) in text.split(' ').filter(|s| !s.is_empty()).enumerate() {
            if count >= MAX_SCOPES {
                return Err(ScopeError {
                    scope: scope.to_owned(),
                    reason: "more than 64 scopes",
                });
            }
            let fail = |reason| ScopeError {
                scope: scope.to_owned(),
                reason,
            };
            let Some((context, rest)) = scope.split_once('/') else {
                if is_known_other(scope) {
                    scopes.other.push(scope.to_owned());
                    continue;
                }
                return Err(fail("not a SMART scope"));
            };
            let context = match context {
                "patient" => Context::Patient,
                "user" => Context::User,
                "system" => Context::System,
                "launch" if rest == "patient" || rest == "encounter" => {
                    scopes.other.push(scope.to_owned());
                    continue;
                }
                _ => return Err(fail("context must be patient, user or system")),
            };
            if rest.contains('?') {
                return Err(fail("granular scope constraints are not supported"));
            }
            let Some((resource_type, perms)) = rest.split_once('.') else {
                return Err(fail("missing .permissions"));
            };
            let resource_type = match resource_type {
                "*" => None,
                name if is_type_name(name) => Some(name.to_owned()),
                _ => return Err(fail("not a resource type")),
            };
            let interactions = parse_permissions(perms).ok_or_else(|| {
                fail("permissions must be a subsequence of cruds, read, write or *")
            })?;
            scopes.resources.push(ResourceScope {
                context,
                resource_type,
                interactions,
            });
        }
        Ok(scopes)
    }

    /// True when some scope of `context` grants `interaction` on `resource_type`.
    pub fn allows(&self, context: Context, resource_type: &str, interaction: Interaction) -> bool {
        self.resources.iter().any(|scope| {
            scope.context == context
                && scope
                    .resource_type
                    .as_deref()
                    .is_none_or(|name| name == resource_type)
                && scope.interactions.contains(&interaction)
        })
    }

    /// What of `requested` these scopes (a client's registration) allow: each requested scope
    /// keeps the interactions granted for its type (by name or by `*`); a requested `*` becomes
    /// the registered scopes it covers. Scopes left with no interaction are dropped: scopes only
    /// ever narrow.
    pub fn narrow(&self, requested: &Scopes) -> Scopes {
        let mut resources: Vec<ResourceScope> = Vec::new();
        let mut add = |scope: ResourceScope| {
            if !scope.interactions.is_empty() && !resources.contains(&scope) {
                resources.push(scope);
            }
        };
        for scope in &requested.resources {
            let granted_for = |resource_type: &Option<String>, interaction: &Interaction| {
                self.resources.iter().any(|granted| {
                    granted.context == scope.context
                        && (granted.resource_type.is_none()
                            || granted.resource_type == *resource_type)
                        && granted.interactions.contains(interaction)
                })
            };
            if scope.resource_type.is_none() {
                for granted in self.resources.iter().filter(|g| g.context == scope.context) {
                    add(ResourceScope {
                        context: scope.context,
                        resource_type: granted.resource_type.clone(),
                        interactions: scope
                            .interactions
                            .iter()
                            .copied()
                            .filter(|i| granted.interactions.contains(i))
                            .collect(),
                    });
                }
            } else {
                add(ResourceScope {
                    context: scope.context,
                    resource_type: scope.resource_type.clone(),
                    interactions: scope
                        .interactions
                        .iter()
                        .copied()
                        .filter(|i| granted_for(&scope.resource_type, i))
                        .collect(),
                });
            }
        }
        Scopes {
            resources,
            other: requested.other.clone(),
        }
    }

    /// True when no scope is of a context other than `context` (a system client may hold only
    /// `system/` scopes, a user only `user/` and `patient/`).
    pub fn only_contexts(&self, allowed: &[Context]) -> bool {
        self.resources
            .iter()
            .all(|scope| allowed.contains(&scope.context))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.resources {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let context = match scope.context {
                Context::Patient => "patient",
                Context::User => "user",
                Context::System => "system",
            };
            let letters: String = Interaction::ORDER
                .iter()
                .filter(|(_, interaction)| scope.interactions.contains(interaction))
                .map(|(letter, _)| *letter)
                .collect();
            write!(
                f,
                "{context}/{}.{letters}",
                scope.resource_type.as_deref().unwrap_or("*")
            )?;
        }
        for other in &self.other {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(other)?;
        }
        Ok(())
    }
}

fn is_known_other(scope: &str) -> bool {
    matches!(
        scope,
        "openid" | "fhirUser" | "profile" | "offline_access" | "online_access"
    )
}

fn is_type_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_permissions(perms: &str) -> Option<Vec<Interaction>> {
    use Interaction::*;
    match perms {
        "read" => return Some(vec![Read, Search]),
        "write" => return Some(vec![Create, Update, Delete]),
        "*" => return Some(vec![Create, Read, Update, Delete, Search]),
        "" => return None,
        _ => {}
    }
    let mut interactions = Vec::new();
    let mut position = 0;
    for letter in perms.chars() {
        let offset = Interaction::ORDER[position..]
            .iter()
            .position(|(candidate, _)| *candidate == letter)?;
        position += offset;
        interactions.push(Interaction::ORDER[position].1);
        position += 1;
    }
    Some(interactions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn v2_and_v1_forms() {
        let scopes =
            Scopes::parse("user/Observation.rs system/*.read openid launch/patient").unwrap();
        assert!(scopes.allows(Context::User, "Observation", Interaction::Search));
        assert!(!scopes.allows(Context::User, "Patient", Interaction::Read));
        assert!(scopes.allows(Context::System, "Patient", Interaction::Read));
        assert!(!scopes.allows(Context::System, "Patient", Interaction::Create));
        assert_eq!(scopes.other, ["openid", "launch/patient"]);
        assert_eq!(
            scopes.to_string(),
            "user/Observation.rs system/*.rs openid launch/patient"
        );
        let write = Scopes::parse("patient/*.write").unwrap();
        assert!(write.allows(Context::Patient, "X", Interaction::Delete));
    }

    #[test]
    fn registration_narrows_requests() {
        let registered = Scopes::parse("system/Observation.rs system/Patient.r").unwrap();
        let requested =
            Scopes::parse("system/*.rs system/Patient.rs system/Observation.cruds").unwrap();
        assert_eq!(
            registered.narrow(&requested).to_string(),
            "system/Observation.rs system/Patient.r"
        );
        let user = Scopes::parse("user/*.rs").unwrap();
        assert!(user.narrow(&requested).resources.is_empty());
    }

    #[test]
    fn bad_scopes_are_rejected_not_ignored() {
        for bad in [
            "user/Observation.dus",
            "user/Observation.",
            "user/Observation.rr",
            "user/Observation",
            "admin/*.rs",
            "user/observation.rs",
            "user/Observation.rs?category=laboratory",
            "user/../Patient.rs",
            "root",
        ] {
            assert!(Scopes::parse(bad).is_err(), "{bad}");
        }
        let many = vec!["user/*.rs"; 65].join(" ");
        assert!(Scopes::parse(&many).is_err());
    }
}
