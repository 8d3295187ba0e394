//! Whether a token still stands, read in one statement on every request that carries it: its
//! client, its user, its facility and any revocation that names it (see
//! `tsunagi_store::Governance::token_standing`). The statement and the decoding of its row are
//! the same on both backends; the rule applied to the answer is the server's (`standing`).

use sqlx::QueryBuilder;
use tsunagi_store::{
    StoreError,
    governance::{Client, Participant, Standing, TokenFacts},
};

use crate::{Cells, Dialect};

/// The statement for `token`.
pub fn standing_query<DB: Dialect>(token: &TokenFacts) -> QueryBuilder<DB> {
    let mut sql = QueryBuilder::<DB>::new(
        "SELECT c.id AS c_id, c.facility AS c_facility, c.kind AS c_kind, c.scope AS c_scope, \
         c.active AS c_active, c.serves AS c_serves, ",
    );
    if token.user {
        sql.push(
            "p.id AS p_id, p.facility AS p_facility, p.role AS p_role, p.active AS p_active, ",
        );
    } else {
        sql.push("NULL AS p_id, NULL AS p_facility, NULL AS p_role, NULL AS p_active, ");
    }
    sql.push("f.active AS f_active, cf.active AS cf_active, EXISTS (SELECT 1 FROM revocations r WHERE (r.kind = 'token' AND r.value = ");
    DB::bind(&mut sql, token.token_id.clone().into());
    sql.push(") OR (r.kind = 'subject' AND r.value IN (");
    DB::bind(&mut sql, token.subject.clone().into());
    sql.push(", ");
    DB::bind(&mut sql, token.client.clone().into());
    sql.push(") AND r.at >= ");
    DB::bind(&mut sql, token.issued_at.into());
    sql.push(")) AS revoked FROM (SELECT 1 AS one) AS one LEFT JOIN clients c ON c.id = ");
    DB::bind(&mut sql, token.client.clone().into());
    if token.user {
        sql.push(" LEFT JOIN participants p ON p.id = ");
        DB::bind(&mut sql, token.subject.clone().into());
    }
    sql.push(" LEFT JOIN facilities f ON f.code = ");
    DB::bind(&mut sql, token.facility.clone().into());
    sql.push(" LEFT JOIN facilities cf ON cf.code = c.facility");
    sql
}

/// A client's `serves` column (space-separated codes).
pub fn serves_from(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The [`Standing`] of the row [`standing_query`] returns.
pub fn standing_from_row(row: &impl Cells) -> Result<Standing, StoreError> {
    let client = match row.opt_text("c_id")? {
        Some(id) => Some(Client {
            id,
            facility: row.text("c_facility")?,
            kind: row.text("c_kind")?,
            jwks: String::new(),
            scope: row.text("c_scope")?,
            active: row.flag("c_active")?,
            serves: serves_from(&row.text("c_serves")?),
        }),
        None => None,
    };
    let user = match row.opt_text("p_id")? {
        Some(id) => Some(Participant {
            id,
            name: String::new(),
            facility: row.text("p_facility")?,
            role: row.text("p_role")?,
            active: row.flag("p_active")?,
        }),
        None => None,
    };
    Ok(Standing {
        client,
        user,
        facility_active: row.opt_flag("f_active")?.unwrap_or(false),
        client_facility_active: row.opt_flag("cf_active")?.unwrap_or(false),
        revoked: row.flag("revoked")?,
    })
}
