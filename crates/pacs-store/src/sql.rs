//! The one seam between the index's SQL and the engine that runs it (SQLite or PostgreSQL).
//!
//! Every statement of the index is written once, in the SQL both engines accept, with `?`
//! placeholders (SQLite's, `?NNN` for a numbered one) and the few dialect-specific pieces taken
//! from [`Dialect`]. Statements run through [`Conn`], which each engine implements for its
//! connection type: PostgreSQL's rewrites the placeholders to `$N` and runs a multi-statement
//! text one statement at a time (SQLite runs it at once, which its writer relies on to save
//! round trips). Values travel as [`Value`]s, so the index code has no engine type in it.

use std::fmt::Write as _;

use async_trait::async_trait;
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

/// The engine a connection belongs to, for the few pieces of SQL that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The current UTC time as text, in the one format every timestamp of the index uses
    /// (`2026-12-07T16:31:22.123Z`), so that timestamps compare as strings on both engines.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Dialect::Postgres => {
                "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            }
        }
    }

    /// The current UTC time plus the number of seconds bound at `placeholder` (negative for
    /// the past), in the format of [`Dialect::now`].
    pub fn now_plus_secs(self, placeholder: &str) -> String {
        match self {
            Dialect::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', {placeholder} || ' seconds')"),
            Dialect::Postgres => format!(
                "to_char(clock_timestamp() AT TIME ZONE 'UTC' + make_interval(secs => CAST({placeholder} AS BIGINT)), \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            ),
        }
    }

    /// Whole seconds from now until the timestamp `expr` (negative once it has passed).
    pub fn secs_until(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST((julianday({expr}) - julianday('now')) * 86400.0 AS INTEGER)"),
            Dialect::Postgres => format!(
                "CAST(EXTRACT(EPOCH FROM (CAST({expr} AS timestamp) - (clock_timestamp() AT TIME ZONE 'UTC'))) AS BIGINT)"
            ),
        }
    }

    /// What a SELECT ends with to lock the rows it reads until the transaction ends
    /// (PostgreSQL; SQLite's single writer holds the whole database already).
    pub fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The key the previous INSERT on this connection generated.
    pub fn last_insert_key(self) -> &'static str {
        match self {
            Dialect::Sqlite => "last_insert_rowid()",
            Dialect::Postgres => "lastval()",
        }
    }

    /// The text values of the JSON array of strings bound at `placeholder`, as a one-column
    /// table whose column is `value`.
    pub fn json_text_values(self, placeholder: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({placeholder})"),
            Dialect::Postgres => {
                format!("SELECT value FROM json_array_elements_text(CAST({placeholder} AS json))")
            }
        }
    }

    /// A text expression as a number for sorting ("10" after "9"); text that is no number
    /// sorts as 0, as SQLite's CAST makes it (PostgreSQL's CAST would fail the query).
    pub fn numeric_sort_key(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST(COALESCE({expr}, '') AS REAL)"),
            Dialect::Postgres => format!(
                "(CASE WHEN {expr} ~ '^\\s*[-+]?[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?\\s*$' \
                 THEN CAST({expr} AS DOUBLE PRECISION) ELSE 0 END)"
            ),
        }
    }

    /// `ASC`/`DESC` with empty values (NULL) first ascending and last descending, SQLite's
    /// order, which PostgreSQL gives only when asked.
    pub fn order(self, descending: bool) -> &'static str {
        match (self, descending) {
            (Dialect::Sqlite, false) => "ASC",
            (Dialect::Sqlite, true) => "DESC",
            (Dialect::Postgres, false) => "ASC NULLS FIRST",
            (Dialect::Postgres, true) => "DESC NULLS LAST",
        }
    }
}

/// A value bound to a placeholder or read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
    /// A BLOB (SQLite) or BYTEA (PostgreSQL): bytes kept as they are (a job's payload).
    Bytes(Vec<u8>),
}

/// One row of a result, its values in column order.
#[derive(Debug)]
pub struct DbRow(Vec<Value>);

impl DbRow {
    /// The value at `index` as `T`; the error names the column and what it held.
    pub fn try_get<T: FromValue>(&self, index: usize) -> Result<T, sqlx::Error> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| sqlx::Error::ColumnIndexOutOfBounds {
                index,
                len: self.0.len(),
            })?;
        T::from_value(value).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("cannot read {value:?} as {}", std::any::type_name::<T>()).into(),
        })
    }
}

impl DbRow {
    /// The value at `index` as it came (NULL past the end).
    pub fn value(&self, index: usize) -> &Value {
        self.0.get(index).unwrap_or(&Value::Null)
    }

    /// The value at `index` as text, moved out of the row (NULL: `None`; an integer: its
    /// decimal text). For the wide rows of queries, where a copy of every value would cost.
    pub fn take_text(&mut self, index: usize) -> Result<Option<String>, sqlx::Error> {
        let len = self.0.len();
        let value = self
            .0
            .get_mut(index)
            .ok_or(sqlx::Error::ColumnIndexOutOfBounds { index, len })?;
        match std::mem::replace(value, Value::Null) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            Value::Int(i) => Ok(Some(i.to_string())),
            other => Err(sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: format!("cannot read {other:?} as text").into(),
            }),
        }
    }
}

/// A Rust type a [`Value`] converts to. Integers and booleans convert into each other (SQLite
/// has no boolean type), and integers into text (a count selected among text columns).
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Real(r) => Some(*r),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A row read as a tuple of values (`query_as`).
pub trait FromRow: Sized {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error>;
}

impl<A: FromValue> FromRow for (A,) {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok((row.try_get(0)?,))
    }
}

impl<A: FromValue, B: FromValue> FromRow for (A, B) {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

impl<A: FromValue, B: FromValue, C: FromValue> FromRow for (A, B, C) {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }
}

impl<A: FromValue, B: FromValue, C: FromValue, D: FromValue> FromRow for (A, B, C, D) {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
    }
}

/// A Rust value bound to a placeholder.
pub trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for i64 {
    fn into_value(self) -> Value {
        Value::Int(self)
    }
}
impl IntoValue for &i64 {
    fn into_value(self) -> Value {
        Value::Int(*self)
    }
}
impl IntoValue for i32 {
    fn into_value(self) -> Value {
        Value::Int(i64::from(self))
    }
}
impl IntoValue for u16 {
    fn into_value(self) -> Value {
        Value::Int(i64::from(self))
    }
}
impl IntoValue for u32 {
    fn into_value(self) -> Value {
        Value::Int(i64::from(self))
    }
}
impl IntoValue for &bool {
    fn into_value(self) -> Value {
        (*self).into_value()
    }
}
impl IntoValue for bool {
    fn into_value(self) -> Value {
        // Stored as an integer on both engines: the schema has no boolean columns.
        Value::Int(i64::from(self))
    }
}
impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::Text(self.to_string())
    }
}
impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::Text(self)
    }
}
impl IntoValue for &String {
    fn into_value(self) -> Value {
        Value::Text(self.clone())
    }
}
impl IntoValue for Vec<u8> {
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}
impl IntoValue for &[u8] {
    fn into_value(self) -> Value {
        Value::Bytes(self.to_vec())
    }
}
impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Null, IntoValue::into_value)
    }
}
impl<'a, T> IntoValue for &'a Option<T>
where
    &'a T: IntoValue,
{
    fn into_value(self) -> Value {
        self.as_ref().map_or(Value::Null, IntoValue::into_value)
    }
}

/// A connection (or transaction) of either engine.
#[async_trait]
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs `sql` (one statement, or several separated by `;`) and returns every row.
    async fn fetch(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<DbRow>, sqlx::Error>;
    /// Runs `sql` and returns the number of rows changed.
    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> Result<u64, sqlx::Error>;
}

/// A statement and its bound values, built like sqlx's `query(…).bind(…)`.
#[must_use]
pub struct Query<'s> {
    sql: &'s str,
    args: Vec<Value>,
}

pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: Vec::new(),
    }
}

impl<'s> Query<'s> {
    pub fn bind(mut self, value: impl IntoValue) -> Self {
        self.args.push(value.into_value());
        self
    }

    pub async fn execute(self, conn: &mut dyn Conn) -> Result<u64, sqlx::Error> {
        conn.execute(self.sql, self.args).await
    }

    pub async fn fetch_all(self, conn: &mut dyn Conn) -> Result<Vec<DbRow>, sqlx::Error> {
        conn.fetch(self.sql, self.args).await
    }

    pub async fn fetch_optional(self, conn: &mut dyn Conn) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(conn.fetch(self.sql, self.args).await?.into_iter().next())
    }

    pub async fn fetch_one(self, conn: &mut dyn Conn) -> Result<DbRow, sqlx::Error> {
        self.fetch_optional(conn).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

/// A query whose rows are read as `T` (a tuple, or one column with [`query_scalar`]).
#[must_use]
pub struct TypedQuery<'s, T> {
    query: Query<'s>,
    read: fn(&DbRow) -> Result<T, sqlx::Error>,
}

pub fn query_as<T: FromRow>(sql: &str) -> TypedQuery<'_, T> {
    TypedQuery {
        query: query(sql),
        read: T::from_row,
    }
}

pub fn query_scalar<T: FromValue>(sql: &str) -> TypedQuery<'_, T> {
    TypedQuery {
        query: query(sql),
        read: |row| row.try_get(0),
    }
}

impl<'s, T> TypedQuery<'s, T> {
    pub fn bind(mut self, value: impl IntoValue) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub async fn fetch_all(self, conn: &mut dyn Conn) -> Result<Vec<T>, sqlx::Error> {
        let read = self.read;
        self.query.fetch_all(conn).await?.iter().map(read).collect()
    }

    pub async fn fetch_optional(self, conn: &mut dyn Conn) -> Result<Option<T>, sqlx::Error> {
        let read = self.read;
        self.query
            .fetch_optional(conn)
            .await?
            .as_ref()
            .map(read)
            .transpose()
    }

    pub async fn fetch_one(self, conn: &mut dyn Conn) -> Result<T, sqlx::Error> {
        let read = self.read;
        read(&self.query.fetch_one(conn).await?)
    }
}

// --- SQLite ---------------------------------------------------------------------------------

fn bind_sqlite<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    args: Vec<Value>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for v in args {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Int(i) => q.bind(i),
            Value::Real(r) => q.bind(r),
            Value::Text(s) => q.bind(s),
            Value::Bool(b) => q.bind(b),
            Value::Bytes(b) => q.bind(b),
        };
    }
    q
}

fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Result<DbRow, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let raw = row.try_get_raw(i)?;
        // The value's own storage class (SQLite's typing is per value, not per column).
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => Value::Int(row.try_get_unchecked(i)?),
                "REAL" => Value::Real(row.try_get_unchecked(i)?),
                "BLOB" => Value::Bytes(row.try_get_unchecked(i)?),
                _ => Value::Text(row.try_get_unchecked(i)?),
            }
        };
        values.push(value);
    }
    Ok(DbRow(values))
}

#[async_trait]
impl Conn for sqlx::SqliteConnection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn fetch(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<DbRow>, sqlx::Error> {
        let rows = bind_sqlite(sqlx::query(sql), args).fetch_all(&mut *self).await?;
        rows.iter().map(sqlite_row).collect()
    }

    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> Result<u64, sqlx::Error> {
        Ok(bind_sqlite(sqlx::query(sql), args)
            .execute(&mut *self)
            .await?
            .rows_affected())
    }
}

// --- PostgreSQL -----------------------------------------------------------------------------

/// One statement of a text written for SQLite, in PostgreSQL's form: its `$N` placeholders
/// and, for each, the index of the value it takes in the whole text's argument list.
#[derive(Debug, PartialEq)]
pub(crate) struct PgStatement {
    pub sql: String,
    pub args: Vec<usize>,
}

/// Splits a SQLite text into statements and rewrites its placeholders: `?` takes the next
/// value of the whole text, `?NNN` the NNN-th (as sqlx binds them on SQLite). Quoted text,
/// quoted names and `--` comments are copied as they are.
pub(crate) fn pg_statements(sql: &str) -> Vec<PgStatement> {
    let mut out = Vec::new();
    let mut current = PgStatement {
        sql: String::with_capacity(sql.len()),
        args: Vec::new(),
    };
    let mut next_arg = 0usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                current.sql.push(c);
                for (_, d) in chars.by_ref() {
                    current.sql.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|&(_, d)| d == '-') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        current.sql.push('\n');
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                let arg = match digits.parse::<usize>() {
                    Ok(n) if n > 0 => n - 1,
                    _ => {
                        next_arg += 1;
                        next_arg - 1
                    }
                };
                // One PostgreSQL parameter per distinct value, numbered in order of first use.
                let local = match current.args.iter().position(|&a| a == arg) {
                    Some(p) => p,
                    None => {
                        current.args.push(arg);
                        current.args.len() - 1
                    }
                };
                let _ = write!(current.sql, "${}", local + 1);
            }
            ';' => {
                if !current.sql.trim().is_empty() {
                    out.push(std::mem::replace(
                        &mut current,
                        PgStatement {
                            sql: String::new(),
                            args: Vec::new(),
                        },
                    ));
                } else {
                    current.sql.clear();
                }
            }
            _ => current.sql.push(c),
        }
    }
    if !current.sql.trim().is_empty() {
        out.push(current);
    }
    out
}

/// A NULL whose type PostgreSQL infers from where it is used. A `None` knows no type here
/// (a value is a [`Value`]), and a NULL sent as text would not go into an integer column.
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        // Oid 0: "unspecified", the parameter's type is inferred from the statement.
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn bind_pg<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    args: &[Value],
    indices: &[usize],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for &i in indices {
        q = match args.get(i).cloned().unwrap_or(Value::Null) {
            Value::Null => q.bind(UntypedNull),
            Value::Int(v) => q.bind(v),
            Value::Real(v) => q.bind(v),
            Value::Text(v) => q.bind(v),
            Value::Bool(v) => q.bind(v),
            Value::Bytes(v) => q.bind(v),
        };
    }
    q
}

fn pg_row(row: &sqlx::postgres::PgRow) -> Result<DbRow, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
                "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
                "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i)?)),
                "BOOL" => Value::Bool(row.try_get(i)?),
                "FLOAT8" => Value::Real(row.try_get(i)?),
                "FLOAT4" => Value::Real(f64::from(row.try_get::<f32, _>(i)?)),
                "BYTEA" => Value::Bytes(row.try_get(i)?),
                // SUM() of integers is NUMERIC, which sqlx reads only with a decimal crate:
                // the statements CAST their sums to BIGINT instead.
                "NUMERIC" => {
                    return Err(sqlx::Error::ColumnDecode {
                        index: i.to_string(),
                        source: "NUMERIC column: CAST it to BIGINT in the statement".into(),
                    })
                }
                _ => Value::Text(row.try_get(i)?),
            }
        };
        values.push(value);
    }
    Ok(DbRow(values))
}

#[async_trait]
impl Conn for sqlx::PgConnection {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn fetch(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<DbRow>, sqlx::Error> {
        let mut out = Vec::new();
        for statement in pg_statements(sql) {
            let rows = bind_pg(sqlx::query(&statement.sql), &args, &statement.args)
                .fetch_all(&mut *self)
                .await?;
            for row in &rows {
                out.push(pg_row(row)?);
            }
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> Result<u64, sqlx::Error> {
        let mut changed = 0;
        for statement in pg_statements(sql) {
            changed += bind_pg(sqlx::query(&statement.sql), &args, &statement.args)
                .execute(&mut *self)
                .await?
                .rows_affected();
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_placeholders_become_postgres_ones_statement_by_statement() {
        let s = pg_statements(
            "INSERT INTO a VALUES (?, '?;', ?); -- what? ; no\nSELECT ?2, ? FROM b WHERE c = ?1",
        );
        assert_eq!(
            s,
            vec![
                PgStatement {
                    sql: "INSERT INTO a VALUES ($1, '?;', $2)".into(),
                    args: vec![0, 1]
                },
                PgStatement {
                    sql: " \nSELECT $1, $2 FROM b WHERE c = $3".into(),
                    args: vec![1, 2, 0]
                },
            ]
        );
    }
}
