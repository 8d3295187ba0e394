//! What differs between SQLite and PostgreSQL, in one place: how a statement spells a
//! placeholder, a list, a pair list, `LEAST`, an index hint; how values are bound; and how a
//! statement runs on a connection. Shared statements are written once with numbered
//! placeholders (`?1`, `?2`, …, SQLite's spelling) and run through [`Stmt`]; statements assembled
//! piece by piece use sqlx's `QueryBuilder` and [`Dialect::bind`].

use std::{borrow::Cow, future::Future, pin::Pin};

use sqlx::{
    AssertSqlSafe, Database, Postgres, QueryBuilder, Row, Sqlite,
    migrate::{MigrateError, Migrator},
    postgres::PgRow,
    query::Query,
    sqlite::SqliteRow,
};
use tsunagi_store::StoreError;

use crate::hot::Connections;

/// A boxed future of a statement's outcome.
pub type Fut<'e, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'e>>;

/// A value bound into a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// An integer.
    Int(i64),
    /// A real.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A truth value (SQLite stores 0 or 1).
    Flag(bool),
    /// NULL where an integer goes.
    NullInt,
    /// NULL where text goes.
    NullText,
    /// NULL where bytes go.
    NullBytes,
    /// A list of texts, tested with [`Dialect::in_list`].
    Texts(Vec<String>),
    /// A list of integers, tested with [`Dialect::in_list`].
    Ints(Vec<i64>),
    /// A list of pairs of texts, read with [`Dialect::pairs`] (bound as a JSON array of pairs).
    Pairs(Vec<[String; 2]>),
}

impl From<i64> for Bound {
    fn from(value: i64) -> Self {
        Bound::Int(value)
    }
}

impl From<f64> for Bound {
    fn from(value: f64) -> Self {
        Bound::Real(value)
    }
}

impl From<bool> for Bound {
    fn from(value: bool) -> Self {
        Bound::Flag(value)
    }
}

impl From<String> for Bound {
    fn from(value: String) -> Self {
        Bound::Text(value)
    }
}

impl From<&String> for Bound {
    fn from(value: &String) -> Self {
        Bound::Text(value.clone())
    }
}

impl From<&str> for Bound {
    fn from(value: &str) -> Self {
        Bound::Text(value.to_owned())
    }
}

impl From<Vec<u8>> for Bound {
    fn from(value: Vec<u8>) -> Self {
        Bound::Bytes(value)
    }
}

impl From<&[u8]> for Bound {
    fn from(value: &[u8]) -> Self {
        Bound::Bytes(value.to_vec())
    }
}

impl From<&Vec<u8>> for Bound {
    fn from(value: &Vec<u8>) -> Self {
        Bound::Bytes(value.clone())
    }
}

impl From<Option<i64>> for Bound {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Bound::NullInt, Bound::Int)
    }
}

impl From<Option<&str>> for Bound {
    fn from(value: Option<&str>) -> Self {
        value.map_or(Bound::NullText, |text| Bound::Text(text.to_owned()))
    }
}

impl From<Option<String>> for Bound {
    fn from(value: Option<String>) -> Self {
        value.map_or(Bound::NullText, Bound::Text)
    }
}

impl From<&Option<String>> for Bound {
    fn from(value: &Option<String>) -> Self {
        value.as_deref().into()
    }
}

impl From<&Option<Vec<u8>>> for Bound {
    fn from(value: &Option<Vec<u8>>) -> Self {
        value.clone().map_or(Bound::NullBytes, Bound::Bytes)
    }
}

impl From<Vec<String>> for Bound {
    fn from(value: Vec<String>) -> Self {
        Bound::Texts(value)
    }
}

impl From<&[String]> for Bound {
    fn from(value: &[String]) -> Self {
        Bound::Texts(value.to_vec())
    }
}

impl From<Vec<&str>> for Bound {
    fn from(value: Vec<&str>) -> Self {
        Bound::Texts(value.into_iter().map(str::to_owned).collect())
    }
}

impl From<Vec<i64>> for Bound {
    fn from(value: Vec<i64>) -> Self {
        Bound::Ints(value)
    }
}

impl From<&[i64]> for Bound {
    fn from(value: &[i64]) -> Self {
        Bound::Ints(value.to_vec())
    }
}

/// A count or limit as a bound integer (saturating).
pub fn count(value: usize) -> Bound {
    Bound::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The JSON text SQLite reads lists from, and both backends read pair lists from.
fn json_text(value: &Bound) -> Option<String> {
    match value {
        Bound::Texts(items) => Some(serde_json::Value::from(items.clone()).to_string()),
        Bound::Ints(items) => Some(serde_json::Value::from(items.clone()).to_string()),
        Bound::Pairs(items) => Some(
            serde_json::Value::Array(
                items
                    .iter()
                    .map(|[a, b]| serde_json::Value::from(vec![a.clone(), b.clone()]))
                    .collect(),
            )
            .to_string(),
        ),
        _ => None,
    }
}

/// Typed reads of a row's columns by name; a column of another type is a database error.
pub trait Cells {
    /// An integer.
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    /// An integer or NULL.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A real.
    fn real(&self, column: &str) -> Result<f64, StoreError>;
    /// Text.
    fn text(&self, column: &str) -> Result<String, StoreError>;
    /// Text or NULL.
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// Bytes.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    /// Bytes or NULL.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A truth value.
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    /// A truth value or NULL.
    fn opt_flag(&self, column: &str) -> Result<Option<bool>, StoreError>;
}

/// The error of a failed statement: a unique-key violation is a [`StoreError::Conflict`] (two
/// writers raced for one key), no connection to be had [`StoreError::Unavailable`], anything
/// else a [`StoreError::Database`].
pub fn db_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            StoreError::Conflict(database.message().to_owned())
        }
        // A NUL in a bound text value (PostgreSQL's text cannot hold U+0000): the request's
        // fault, named as such, not the database's.
        sqlx::Error::Database(database) if database.code().as_deref() == Some("22021") => {
            StoreError::Invalid(format!(
                "a value holds a character the database cannot store: {}",
                database.message()
            ))
        }
        // No connection was had: nothing was done, so the same request may be made again. (An
        // IO error mid-statement is not this: a commit may have happened.)
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Database(tsunagi_store::DatabaseError::caused_by(error)),
    }
}

macro_rules! cells_of {
    ($row:ty, $flag:expr) => {
        impl Cells for $row {
            fn int(&self, column: &str) -> Result<i64, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn real(&self, column: &str) -> Result<f64, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn text(&self, column: &str) -> Result<String, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.try_get(column).map_err(db_error)
            }
            fn flag(&self, column: &str) -> Result<bool, StoreError> {
                Ok(self.opt_flag(column)?.unwrap_or(false))
            }
            fn opt_flag(&self, column: &str) -> Result<Option<bool>, StoreError> {
                $flag(self, column)
            }
        }
    };
}

// SQLite keeps truth values as integers; a computed column may carry no declared type, so
// they are read as integers there.
cells_of!(SqliteRow, |row: &SqliteRow, column: &str| {
    row.try_get::<Option<i64>, _>(column)
        .map(|value| value.map(|value| value != 0))
        .map_err(db_error)
});
cells_of!(PgRow, |row: &PgRow, column: &str| row
    .try_get::<Option<bool>, _>(column)
    .map_err(db_error));

/// What differs between the databases.
pub trait Dialect: Database<Row: Cells> + Sized {
    /// The function giving a substring's position, 0 when absent (`instr`, `strpos`).
    const POSITION: &'static str;
    /// The smaller of two values (`MIN`, `LEAST`).
    const LEAST: &'static str;
    /// The larger of two values (`MAX`, `GREATEST`).
    const GREATEST: &'static str;
    /// A join whose order the planner must keep (`CROSS JOIN` fixes it in SQLite; PostgreSQL
    /// plans with statistics and spells it `JOIN`).
    const ORDERED_JOIN: &'static str;
    /// A row when the table named by `?1` exists (in the current schema).
    const TABLE_EXISTS: &'static str;

    /// ` INDEXED BY <index>` where the database takes such a hint, else nothing.
    fn indexed_by(index: &str) -> String;
    /// ` FOR UPDATE SKIP LOCKED` where rows are locked one by one (PostgreSQL: several nodes
    /// claim work from one queue), else nothing (SQLite has one writer).
    const SKIP_LOCKED: &'static str;
    /// `<column>` is one of the list bound at `placeholder` ([`Bound::Texts`], [`Bound::Ints`]).
    fn in_list(column: &str, placeholder: &str) -> String;
    /// A table of the pairs bound at `placeholder` ([`Bound::Pairs`]), columns `first`, `second`.
    fn pairs(placeholder: &str) -> String;
    /// `FROM …`: the rows of `messages` (not conflicts) whose (sender, control_id) is one of the
    /// pairs bound at `placeholder`, each found through the `messages_key` index.
    fn logged_keys(placeholder: &str) -> String;
    /// Binds `value` at the end of `sql`.
    fn bind(sql: &mut QueryBuilder<Self>, value: Bound);
    /// A condition: text column `column` contains `term` exactly (a substring).
    fn push_contains(sql: &mut QueryBuilder<Self>, column: &str, term: &str);
    /// Narrows a region-wide search of `idx_text` to the rows its trigram index finds for
    /// `terms` (each of at least three characters), appended as ` AND …` (SQLite: the FTS5
    /// table; PostgreSQL: nothing, its `LIKE` conditions use the pg_trgm indexes themselves).
    fn push_text_index(sql: &mut QueryBuilder<Self>, terms: &[&str], narrative_only: bool);
    /// A statement written with `?N` placeholders, in this database's spelling.
    fn spell(text: &str) -> Cow<'_, str>;
    /// The query of a [`Stmt`]: its text (already spelled; a static text is not copied) and
    /// values.
    fn query(
        text: Cow<'static, str>,
        values: Vec<Bound>,
    ) -> Result<Query<'static, Self, Self::Arguments>, StoreError>;
    /// Runs a statement, giving the number of rows it changed.
    fn execute<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Self::Arguments>,
    ) -> Fut<'e, u64>;
    /// Runs a query, giving its rows.
    fn fetch_all<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Self::Arguments>,
    ) -> Fut<'e, Vec<Self::Row>>;
    /// Runs a query, giving its first row if any.
    fn fetch_optional<'e, 'q: 'e>(
        connection: &'e mut Self::Connection,
        query: Query<'q, Self, Self::Arguments>,
    ) -> Fut<'e, Option<Self::Row>>;
    /// Applies `migrator`'s pending migrations, or with `skip_to` only marks those up to that
    /// version applied (see `crate::migrations`).
    fn migrate<'e>(
        connection: &'e mut Self::Connection,
        migrator: &'e Migrator,
        skip_to: Option<i64>,
    ) -> Migrating<'e>;
}

/// A boxed future of a migration run.
pub type Migrating<'e> = Pin<Box<dyn Future<Output = Result<(), MigrateError>> + Send + 'e>>;

/// A query of `text`: a static text is used as it is, an assembled one is vouched for (every
/// value is bound, never spliced into the text).
macro_rules! with_text {
    ($text:expr, $arguments:expr) => {
        match $text {
            Cow::Borrowed(text) => sqlx::query_with(text, $arguments),
            Cow::Owned(text) => sqlx::query_with(AssertSqlSafe(text), $arguments),
        }
    };
}

/// The running methods of [`Dialect`], the same text for each database (the types differ).
macro_rules! runs_on_its_connection {
    () => {
        fn execute<'e, 'q: 'e>(
            connection: &'e mut Self::Connection,
            query: Query<'q, Self, Self::Arguments>,
        ) -> Fut<'e, u64> {
            Box::pin(async move { Ok(query.execute(connection).await?.rows_affected()) })
        }

        fn fetch_all<'e, 'q: 'e>(
            connection: &'e mut Self::Connection,
            query: Query<'q, Self, Self::Arguments>,
        ) -> Fut<'e, Vec<Self::Row>> {
            Box::pin(query.fetch_all(connection))
        }

        fn fetch_optional<'e, 'q: 'e>(
            connection: &'e mut Self::Connection,
            query: Query<'q, Self, Self::Arguments>,
        ) -> Fut<'e, Option<Self::Row>> {
            Box::pin(query.fetch_optional(connection))
        }

        fn migrate<'e>(
            connection: &'e mut Self::Connection,
            migrator: &'e Migrator,
            skip_to: Option<i64>,
        ) -> Migrating<'e> {
            // `run_direct` is `run` and `skip` on a connection: the two through `Acquire` do
            // not compile inside a boxed future (sqlx's own note on `run_direct`).
            Box::pin(migrator.run_direct(skip_to, connection, skip_to.is_some()))
        }
    };
}

macro_rules! bind_value {
    ($sink:expr, $value:expr) => {
        match $value {
            Bound::Int(value) => $sink(value),
            Bound::Real(value) => $sink(value),
            Bound::Text(value) => $sink(value),
            Bound::Bytes(value) => $sink(value),
            Bound::Flag(value) => $sink(value),
            Bound::NullInt => $sink(None::<i64>),
            Bound::NullText => $sink(None::<String>),
            Bound::NullBytes => $sink(None::<Vec<u8>>),
            list => $sink(json_text(&list).unwrap_or_default()),
        }
    };
}

impl Dialect for Sqlite {
    const POSITION: &'static str = "instr";
    const LEAST: &'static str = "MIN";
    const GREATEST: &'static str = "MAX";
    const ORDERED_JOIN: &'static str = "CROSS JOIN";
    const TABLE_EXISTS: &'static str =
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1";

    fn indexed_by(index: &str) -> String {
        format!(" INDEXED BY {index}")
    }

    const SKIP_LOCKED: &'static str = "";

    fn in_list(column: &str, placeholder: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({placeholder}))")
    }

    fn pairs(placeholder: &str) -> String {
        format!(
            "(SELECT json_extract(value, '$[0]') AS first, json_extract(value, '$[1]') AS second \
             FROM json_each({placeholder}))"
        )
    }

    fn logged_keys(placeholder: &str) -> String {
        format!(
            "FROM messages WHERE state <> 'conflict' AND (sender, control_id) IN \
             (SELECT first, second FROM {} AS keys)",
            Self::pairs(placeholder)
        )
    }

    fn bind(sql: &mut QueryBuilder<Self>, value: Bound) {
        bind_value!(
            |value| {
                sql.push_bind(value);
            },
            value
        )
    }

    fn push_contains(sql: &mut QueryBuilder<Self>, column: &str, term: &str) {
        sql.push(format!("instr({column}, "));
        sql.push_bind(term.to_owned());
        sql.push(") > 0");
    }

    fn push_text_index(sql: &mut QueryBuilder<Self>, terms: &[&str], narrative_only: bool) {
        let phrases: Vec<String> = terms.iter().map(|term| fts5_phrase(term)).collect();
        let mut expression = phrases.join(" AND ");
        if narrative_only {
            expression = format!("{{narrative}} : ({expression})");
        }
        sql.push(" AND rid IN (SELECT rowid FROM idx_text_fts WHERE idx_text_fts MATCH ");
        sql.push_bind(expression);
        sql.push(")");
    }

    fn spell(text: &str) -> Cow<'_, str> {
        Cow::Borrowed(text)
    }

    fn query(
        text: Cow<'static, str>,
        values: Vec<Bound>,
    ) -> Result<Query<'static, Self, Self::Arguments>, StoreError> {
        let mut arguments = <Self::Arguments as Default>::default();
        for value in values {
            bind_value!(
                |value| sqlx::Arguments::add(&mut arguments, value).map_err(|error| {
                    StoreError::Database(tsunagi_store::DatabaseError::from(error))
                }),
                value
            )?;
        }
        Ok(with_text!(text, arguments))
    }

    runs_on_its_connection!();
}

/// `%term%` with LIKE's own characters escaped (PostgreSQL's default escape, `\\`).
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for ch in term.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// An FTS5 string (a phrase): double quotes doubled.
fn fts5_phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

impl Dialect for Postgres {
    const POSITION: &'static str = "strpos";
    const LEAST: &'static str = "LEAST";
    const GREATEST: &'static str = "GREATEST";
    const ORDERED_JOIN: &'static str = "JOIN";
    const TABLE_EXISTS: &'static str = "SELECT tablename FROM pg_tables \
        WHERE schemaname = current_schema() AND tablename = ?1";

    fn indexed_by(_index: &str) -> String {
        String::new()
    }

    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn in_list(column: &str, placeholder: &str) -> String {
        format!("{column} = ANY({placeholder})")
    }

    fn pairs(placeholder: &str) -> String {
        format!(
            "(SELECT value->>0 AS first, value->>1 AS second \
             FROM jsonb_array_elements(CAST({placeholder} AS jsonb)))"
        )
    }

    /// A lookup per pair (LATERAL): with `IN`, a log not yet analysed was read whole into a
    /// hash join for every group of messages (1 ms at 3,000 rows, growing with the log; 0.13
    /// ms this way). `LIMIT 1` (the index holds one row per key) keeps the planner from
    /// flattening the lookup back into that join.
    fn logged_keys(placeholder: &str) -> String {
        format!(
            "FROM jsonb_array_elements(CAST({placeholder} AS jsonb)) AS keys(pair) \
             CROSS JOIN LATERAL (SELECT * FROM messages \
             WHERE sender = keys.pair->>0 AND control_id = keys.pair->>1 \
             AND state <> 'conflict' LIMIT 1) AS logged"
        )
    }

    fn bind(sql: &mut QueryBuilder<Self>, value: Bound) {
        match value {
            Bound::Texts(items) => {
                sql.push_bind(items);
            }
            Bound::Ints(items) => {
                sql.push_bind(items);
            }
            other => bind_value!(
                |value| {
                    sql.push_bind(value);
                },
                other
            ),
        }
    }

    fn push_contains(sql: &mut QueryBuilder<Self>, column: &str, term: &str) {
        sql.push(format!("{column} LIKE "));
        sql.push_bind(like_pattern(term));
    }

    fn push_text_index(_sql: &mut QueryBuilder<Self>, _terms: &[&str], _narrative_only: bool) {}

    fn spell(text: &str) -> Cow<'_, str> {
        if !text.contains('?') {
            return Cow::Borrowed(text);
        }
        // Only a `?` followed by a digit is a placeholder; shared statements put no `?N` inside
        // a literal.
        let mut spelled = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
                spelled.push('$');
            } else {
                spelled.push(c);
            }
        }
        Cow::Owned(spelled)
    }

    fn query(
        text: Cow<'static, str>,
        values: Vec<Bound>,
    ) -> Result<Query<'static, Self, Self::Arguments>, StoreError> {
        let mut arguments = <Self::Arguments as Default>::default();
        for value in values {
            let added = match value {
                Bound::Texts(items) => sqlx::Arguments::add(&mut arguments, items),
                Bound::Ints(items) => sqlx::Arguments::add(&mut arguments, items),
                other => bind_value!(|value| sqlx::Arguments::add(&mut arguments, value), other),
            };
            added
                .map_err(|error| StoreError::Database(tsunagi_store::DatabaseError::from(error)))?;
        }
        Ok(with_text!(text, arguments))
    }

    runs_on_its_connection!();
}

/// A statement written once with `?N` placeholders, and its values.
#[derive(Debug, Clone)]
pub struct Stmt {
    text: Cow<'static, str>,
    values: Vec<Bound>,
}

/// A statement to run on either database.
pub fn stmt(text: impl Into<Cow<'static, str>>) -> Stmt {
    Stmt {
        text: text.into(),
        values: Vec::new(),
    }
}

impl Stmt {
    /// Binds the next placeholder.
    pub fn arg(mut self, value: impl Into<Bound>) -> Self {
        self.values.push(value.into());
        self
    }

    fn query<D: Dialect>(self) -> Result<Query<'static, D, D::Arguments>, StoreError> {
        let spelled = match D::spell(&self.text) {
            Cow::Owned(spelled) => Some(spelled),
            Cow::Borrowed(_) => None,
        };
        D::query(spelled.map_or(self.text, Cow::Owned), self.values)
    }

    /// Runs it, giving the number of rows changed.
    pub async fn execute<D: Dialect>(
        self,
        connection: &mut D::Connection,
    ) -> Result<u64, StoreError> {
        D::execute(connection, self.query::<D>()?)
            .await
            .map_err(db_error)
    }

    /// Runs it, giving its rows.
    pub async fn fetch_all<D: Dialect>(
        self,
        connection: &mut D::Connection,
    ) -> Result<Vec<D::Row>, StoreError> {
        D::fetch_all(connection, self.query::<D>()?)
            .await
            .map_err(db_error)
    }

    /// Runs it, giving its first row if any.
    pub async fn fetch_optional<D: Dialect>(
        self,
        connection: &mut D::Connection,
    ) -> Result<Option<D::Row>, StoreError> {
        D::fetch_optional(connection, self.query::<D>()?)
            .await
            .map_err(db_error)
    }

    /// Runs it, giving its one row (a query that finds none is a database error).
    pub async fn fetch_one<D: Dialect>(
        self,
        connection: &mut D::Connection,
    ) -> Result<D::Row, StoreError> {
        self.fetch_optional::<D>(connection)
            .await?
            .ok_or_else(|| StoreError::database("the statement returned no row".to_owned()))
    }
}

impl Stmt {
    /// [`Stmt::execute`] on a connection of `pool`.
    pub async fn execute_in<D: Dialect>(self, pool: &Connections<D>) -> Result<u64, StoreError> {
        let mut connection = pool.acquire().await?;
        let changed = self.execute::<D>(&mut connection).await?;
        connection.done();
        Ok(changed)
    }

    /// [`Stmt::fetch_all`] on a connection of `pool`.
    pub async fn fetch_all_in<D: Dialect>(
        self,
        pool: &Connections<D>,
    ) -> Result<Vec<D::Row>, StoreError> {
        let mut connection = pool.acquire().await?;
        let rows = self.fetch_all::<D>(&mut connection).await?;
        connection.done();
        Ok(rows)
    }

    /// [`Stmt::fetch_optional`] on a connection of `pool`.
    pub async fn fetch_optional_in<D: Dialect>(
        self,
        pool: &Connections<D>,
    ) -> Result<Option<D::Row>, StoreError> {
        let mut connection = pool.acquire().await?;
        let row = self.fetch_optional::<D>(&mut connection).await?;
        connection.done();
        Ok(row)
    }

    /// [`Stmt::fetch_one`] on a connection of `pool`.
    pub async fn fetch_one_in<D: Dialect>(
        self,
        pool: &Connections<D>,
    ) -> Result<D::Row, StoreError> {
        let mut connection = pool.acquire().await?;
        let row = self.fetch_one::<D>(&mut connection).await?;
        connection.done();
        Ok(row)
    }
}

/// Runs a statement assembled with a `QueryBuilder`, giving its rows.
pub async fn fetch_built<D: Dialect>(
    connection: &mut D::Connection,
    sql: &mut QueryBuilder<D>,
) -> Result<Vec<D::Row>, StoreError> {
    D::fetch_all(connection, sql.build())
        .await
        .map_err(db_error)
}

/// Runs a statement assembled with a `QueryBuilder`, giving the number of rows changed.
pub async fn execute_built<D: Dialect>(
    connection: &mut D::Connection,
    sql: &mut QueryBuilder<D>,
) -> Result<u64, StoreError> {
    D::execute(connection, sql.build()).await.map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_the_placeholders_sqlite_writes() {
        assert_eq!(
            Postgres::spell("SELECT 1 WHERE a = ?1 AND b = ?12"),
            "SELECT 1 WHERE a = $1 AND b = $12"
        );
        assert_eq!(Sqlite::spell("a = ?1"), "a = ?1");
        assert_eq!(Postgres::spell("a = '?' AND b = ?2"), "a = '?' AND b = $2");
    }

    #[test]
    fn lists_and_pairs_are_json_for_sqlite() {
        assert_eq!(
            json_text(&Bound::Pairs(vec![["a".into(), "b\"".into()]])).as_deref(),
            Some(r#"[["a","b\""]]"#)
        );
        assert_eq!(
            json_text(&Bound::Ints(vec![1, 2])).as_deref(),
            Some("[1,2]")
        );
    }
}
