//! The consent guard: the one test, on both databases, of whether a viewer may see the rows of
//! a compartment. Every read of clinical data adds it — reads by id, versions, history, search,
//! includes, compartments, `$everything` — so who sees what is decided here and nowhere else.
//!
//! A row of compartment `pat` is visible to facility F at instant T when it belongs to no
//! compartment (`pat = 0`: the directory), when F holds the compartment (its own patient), or
//! when an `access` row (written from a consent, see `governance`) lets F see it at T. An
//! unrestricted reader (the operator's tools, the adapters) sees everything.

use sqlx::QueryBuilder;
use tsunagi_store::Access;

use crate::dialect::{Bound, Dialect};

/// The guard, with `{pat}` for the compartment column and the viewer's code and instant as
/// markers that each renderer turns into placeholders.
const GUARD: &str = "({pat} = 0 OR EXISTS (SELECT 1 FROM compartments gc WHERE gc.id = {pat} AND gc.facility = \u{1}) \
    OR EXISTS (SELECT 1 FROM access ga WHERE ga.viewer = \u{1} AND ga.pat = {pat} AND ga.not_before <= \u{2} AND ga.not_after > \u{2}))";

const VIEWER: char = '\u{1}';
const AT: char = '\u{2}';

/// The viewer's facility code (`None`: unrestricted) and the instant access is judged at.
pub fn viewer(access: &Access) -> (Option<&str>, i64) {
    match access {
        Access::Facility { code, at } => (Some(code.as_str()), *at),
        Access::Unrestricted => (None, 0),
    }
}

/// The guard for a [`crate::Stmt`] over compartment column `pat`, reading the viewer's code
/// (NULL: unrestricted) from placeholder `viewer` and the instant from `at` (bind them with
/// [`viewer`]).
pub fn guard(pat: &str, viewer: &str, at: &str) -> String {
    let body = GUARD
        .replace("{pat}", pat)
        .replace(VIEWER, viewer)
        .replace(AT, at);
    format!("({viewer} IS NULL OR {body})")
}

/// Appends ` AND <guard>` over compartment column `pat` to a statement assembled piece by
/// piece. Nothing for [`Access::Unrestricted`].
pub fn push_guard<D: Dialect>(sql: &mut QueryBuilder<D>, access: &Access, pat: &str) {
    let Access::Facility { code, at } = access else {
        return;
    };
    sql.push(" AND ");
    let body = GUARD.replace("{pat}", pat);
    let mut rest = body.as_str();
    while let Some(position) = rest.find([VIEWER, AT]) {
        sql.push(&rest[..position]);
        let marker = rest[position..].chars().next();
        D::bind(
            sql,
            if marker == Some(VIEWER) {
                Bound::Text(code.clone())
            } else {
                Bound::Int(*at)
            },
        );
        rest = &rest[position + 1..];
    }
    sql.push(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Sqlite;

    #[test]
    fn both_renderers_spell_the_same_test() {
        let statement = guard("r.pat", "?2", "?3");
        assert!(statement.starts_with("(?2 IS NULL OR (r.pat = 0 OR EXISTS"));
        assert_eq!(statement.matches("?2").count(), 3);
        assert_eq!(statement.matches("?3").count(), 2);
        let mut built = QueryBuilder::<Sqlite>::new("SELECT 1 FROM resources r WHERE 1");
        push_guard(
            &mut built,
            &Access::Facility {
                code: "0000000001".into(),
                at: 5,
            },
            "r.pat",
        );
        let built = built.sql().as_str().to_owned();
        let expected = GUARD.replace("{pat}", "r.pat").replace([VIEWER, AT], "?");
        assert_eq!(
            built,
            format!("SELECT 1 FROM resources r WHERE 1 AND {expected}")
        );
        let mut open = QueryBuilder::<Sqlite>::new("x");
        push_guard(&mut open, &Access::Unrestricted, "r.pat");
        assert_eq!(open.sql().as_str(), "x");
    }
}
