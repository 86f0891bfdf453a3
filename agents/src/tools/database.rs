//! Dean's database inspection: tables, DDL, PII-looking columns and query plans, read-only.
//!
//! This module owns looking at a configured SQLite or PostgreSQL database the way a data
//! engineer would before answering a question about it. It must never write to that
//! database, and three independent layers make sure of it: connections are read-only
//! (SQLite opened with `SQLITE_OPEN_READONLY` and `query_only`; PostgreSQL sessions with
//! `default_transaction_read_only`, plus a `READ ONLY` transaction around every `EXPLAIN`),
//! [`Warehouse::explain`] accepts exactly one `SELECT`/`WITH` statement with no write
//! keyword anywhere, and it only ever runs `EXPLAIN` — never `EXPLAIN ANALYZE` — so the
//! query itself is planned, not executed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::sql::{self, Use};

/// A table with at least this many rows is big: reading all of it for a few rows is slow.
pub const BIG_TABLE_ROWS: u64 = 10_000;

/// How long one inspection query may run on PostgreSQL before the server cancels it.
const STATEMENT_TIMEOUT: &str = "10s";

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum DbToolError {
    /// The URL is neither `sqlite:…` nor `postgres://…`.
    #[error("database URL must be sqlite:PATH or postgres://…, not {scheme}:…")]
    UnsupportedUrl {
        /// The scheme that was given (the rest is not shown: it may hold a password).
        scheme: String,
    },
    /// The database could not be opened.
    #[error("cannot open {target}: {source}")]
    Connect {
        /// The database, with any password removed.
        target: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// An inspection query failed (including `EXPLAIN` of a query that does not compile).
    #[error("query on {target} failed: {source}")]
    Query {
        /// The database, with any password removed.
        target: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// `explain` was asked for something other than one read-only query.
    #[error("refused to explain: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The database answered `EXPLAIN` with something this module cannot read.
    #[error("unreadable plan from {target}: {detail}")]
    Plan {
        /// The database, with any password removed.
        target: String,
        /// What was wrong.
        detail: String,
    },
}

/// A table and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// `main` on SQLite; the schema on PostgreSQL.
    pub schema: String,
    /// The table's name.
    pub name: String,
    /// Approximate number of rows: the planner's statistics where the database has them
    /// (`ANALYZE`d), else an exact count.
    pub rows: u64,
    /// The columns, in table order.
    pub columns: Vec<ColumnInfo>,
}

impl TableInfo {
    /// `schema.name`, or just `name` in SQLite's `main` and PostgreSQL's `public`.
    pub fn qualified_name(&self) -> String {
        if self.schema == "main" || self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The column's name.
    pub name: String,
    /// The declared type, as the database reports it (`TEXT`, `character varying(255)`).
    pub data_type: String,
    /// False when the column is `NOT NULL` (or, in SQLite, a primary key).
    pub nullable: bool,
}

/// What kind of personal data a column looks like it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// E-mail address.
    Email,
    /// Phone or fax number.
    Phone,
    /// Social security, passport, tax or other government id.
    GovernmentId,
    /// Date of birth.
    DateOfBirth,
    /// Postal address.
    Address,
    /// A person's name.
    Name,
    /// IP address.
    IpAddress,
    /// Payment card data.
    Card,
    /// Precise location.
    Location,
    /// Health data (a GDPR special category).
    Health,
    /// Passwords, tokens and keys: not personal data, but never to be exposed either.
    Credential,
}

impl PiiKind {
    /// A short name: `email`, `phone`, `ssn`…
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::GovernmentId => "government id",
            PiiKind::DateOfBirth => "date of birth",
            PiiKind::Address => "address",
            PiiKind::Name => "name",
            PiiKind::IpAddress => "ip address",
            PiiKind::Card => "payment card",
            PiiKind::Location => "location",
            PiiKind::Health => "health",
            PiiKind::Credential => "credential",
        }
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column that looks like it holds personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiColumn {
    /// The table (`schema.table` outside `main`/`public`).
    pub table: String,
    /// The column.
    pub column: String,
    /// What it looks like.
    pub why: PiiKind,
}

/// What `EXPLAIN` said about a query, and what would make it faster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanReport {
    /// The plan as an indented tree, one node a line.
    pub plan: String,
    /// What is slow, in plain words: full scans of big tables, filters and joins that no
    /// index serves, sorts without an index. Empty when nothing stands out.
    pub findings: Vec<String>,
    /// `CREATE INDEX` statements that would serve the query's filters and joins.
    pub suggested_indexes: Vec<String>,
}

#[derive(Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A read-only connection pool to the database an agent inspects.
#[derive(Debug)]
pub struct Warehouse {
    db: Db,
    /// The URL without its password, for error messages.
    target: String,
}

impl Warehouse {
    /// Opens `url` read-only: `sqlite:PATH` (the file must exist; it is opened with
    /// `SQLITE_OPEN_READONLY`) or `postgres://…` (every session has
    /// `default_transaction_read_only=on` and a statement timeout).
    pub async fn connect(url: &str) -> Result<Warehouse, DbToolError> {
        let target = redact(url);
        let connect_err = |source| DbToolError::Connect {
            target: target.clone(),
            source,
        };
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .read_only(true)
                .create_if_missing(false)
                // A second lock on the door: even a statement that slipped through could
                // not write on this connection.
                .pragma("query_only", "ON");
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(connect_err)?
                .options([
                    ("default_transaction_read_only", "on"),
                    ("statement_timeout", STATEMENT_TIMEOUT),
                ]);
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Db::Postgres(pool)
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            return Err(DbToolError::UnsupportedUrl { scheme });
        };
        Ok(Warehouse { db, target })
    }

    fn query_err(&self) -> impl Fn(sqlx::Error) -> DbToolError + '_ {
        |source| DbToolError::Query {
            target: self.target.clone(),
            source,
        }
    }

    /// Every table with its approximate row count and columns, ordered by schema and name.
    /// System tables are left out.
    pub async fn tables(&self) -> Result<Vec<TableInfo>, DbToolError> {
        match &self.db {
            Db::Sqlite(pool) => self.sqlite_tables(pool).await,
            Db::Postgres(pool) => self.pg_tables(pool).await,
        }
    }

    async fn sqlite_tables(&self, pool: &SqlitePool) -> Result<Vec<TableInfo>, DbToolError> {
        let rows = sqlx::query(
            "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY m.name, p.cid",
        )
        .fetch_all(pool)
        .await
        .map_err(self.query_err())?;
        let mut tables: Vec<TableInfo> = Vec::new();
        for row in rows {
            let table: String = row.try_get(0).map_err(self.query_err())?;
            let column = ColumnInfo {
                name: row.try_get(1).map_err(self.query_err())?,
                data_type: row.try_get(2).map_err(self.query_err())?,
                nullable: row.try_get::<i64, _>(3).map_err(self.query_err())? == 0
                    && row.try_get::<i64, _>(4).map_err(self.query_err())? == 0,
            };
            match tables.last_mut() {
                Some(t) if t.name == table => t.columns.push(column),
                _ => tables.push(TableInfo {
                    schema: "main".to_owned(),
                    name: table,
                    rows: 0,
                    columns: vec![column],
                }),
            }
        }

        // Row counts: the statistics ANALYZE keeps in sqlite_stat1 (the first number of
        // `stat` is the table's row count), else an exact count.
        let has_stats: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'",
        )
        .fetch_optional(pool)
        .await
        .map_err(self.query_err())?;
        let mut stats: HashMap<String, u64> = HashMap::new();
        if has_stats.is_some() {
            let rows = sqlx::query("SELECT tbl, stat FROM sqlite_stat1")
                .fetch_all(pool)
                .await
                .map_err(self.query_err())?;
            for row in rows {
                let table: String = row.try_get(0).map_err(self.query_err())?;
                let stat: String = row.try_get(1).map_err(self.query_err())?;
                if let Some(n) = stat.split(' ').next().and_then(|n| n.parse::<u64>().ok()) {
                    let e = stats.entry(table).or_default();
                    *e = (*e).max(n);
                }
            }
        }
        for t in &mut tables {
            t.rows = match stats.get(&t.name) {
                Some(&n) => n,
                None => {
                    // The name comes from sqlite_master and is quoted, so it is an identifier.
                    let sql = format!("SELECT count(*) FROM {}", quote_ident(&t.name));
                    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                        .fetch_one(pool)
                        .await
                        .map_err(self.query_err())?;
                    u64::try_from(n).unwrap_or(0)
                }
            };
        }
        Ok(tables)
    }

    async fn pg_tables(&self, pool: &PgPool) -> Result<Vec<TableInfo>, DbToolError> {
        let rows = sqlx::query(
            "SELECT n.nspname::text, c.relname::text, c.reltuples::float8, \
                    a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relkind IN ('r', 'p') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY n.nspname, c.relname, a.attnum",
        )
        .fetch_all(pool)
        .await
        .map_err(self.query_err())?;
        let mut tables: Vec<TableInfo> = Vec::new();
        // Tables never analysed report -1 rows (PostgreSQL 14+): count those exactly.
        let mut unknown = Vec::new();
        for row in rows {
            let schema: String = row.try_get(0).map_err(self.query_err())?;
            let table: String = row.try_get(1).map_err(self.query_err())?;
            let estimate: f64 = row.try_get(2).map_err(self.query_err())?;
            let column = ColumnInfo {
                name: row.try_get(3).map_err(self.query_err())?,
                data_type: row.try_get(4).map_err(self.query_err())?,
                nullable: !row.try_get::<bool, _>(5).map_err(self.query_err())?,
            };
            match tables.last_mut() {
                Some(t) if t.name == table && t.schema == schema => t.columns.push(column),
                _ => {
                    if estimate < 0.0 {
                        unknown.push(tables.len());
                    }
                    tables.push(TableInfo {
                        schema,
                        name: table,
                        // Saturating float-to-int conversion: estimates are never negative
                        // here and never near u64::MAX.
                        rows: estimate.max(0.0).round() as u64,
                        columns: vec![column],
                    });
                }
            }
        }
        for i in unknown {
            let t = &tables[i];
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(&t.schema),
                quote_ident(&t.name)
            );
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .map_err(self.query_err())?;
            tables[i].rows = u64::try_from(n).unwrap_or(0);
        }
        Ok(tables)
    }

    /// The `CREATE TABLE` statement of `table` (`name` or `schema.name`) followed by its
    /// `CREATE INDEX` statements, or `None` when there is no such table. On PostgreSQL the
    /// DDL is rebuilt from the catalog (columns, defaults, constraints, indexes).
    pub async fn ddl(&self, table: &str) -> Result<Option<String>, DbToolError> {
        match &self.db {
            Db::Sqlite(pool) => {
                let name = table.strip_prefix("main.").unwrap_or(table);
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT type, sql FROM sqlite_master \
                     WHERE tbl_name = ?1 COLLATE NOCASE AND sql IS NOT NULL \
                       AND type IN ('table', 'index') \
                     ORDER BY type = 'index', name",
                )
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(self.query_err())?;
                if !rows.iter().any(|(kind, _)| kind == "table") {
                    return Ok(None);
                }
                let statements: Vec<String> =
                    rows.into_iter().map(|(_, sql)| format!("{sql};")).collect();
                Ok(Some(statements.join("\n")))
            }
            Db::Postgres(pool) => self.pg_ddl(pool, table).await,
        }
    }

    async fn pg_ddl(&self, pool: &PgPool, table: &str) -> Result<Option<String>, DbToolError> {
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        // Unqualified names prefer `public`, as the default search path would.
        let oid: Option<(sqlx::postgres::types::Oid, String, String)> = sqlx::query_as(
            "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND c.relname = $1 \
               AND ($2::text IS NULL OR n.nspname = $2) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY n.nspname <> 'public', n.nspname LIMIT 1",
        )
        .bind(name)
        .bind(schema)
        .fetch_optional(pool)
        .await
        .map_err(self.query_err())?;
        let Some((oid, schema, name)) = oid else {
            return Ok(None);
        };
        let columns: Vec<(String, String, bool, Option<String>)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(self.query_err())?;
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1 ORDER BY contype <> 'p', conname",
        )
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(self.query_err())?;
        // Indexes that back a constraint are already in the table definition.
        let indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = $1 \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY i.indexrelid::regclass::text",
        )
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(self.query_err())?;

        let mut lines: Vec<String> = columns
            .into_iter()
            .map(|(col, ty, not_null, default)| {
                let mut line = format!("    {} {ty}", quote_ident(&col));
                if let Some(default) = default {
                    line.push_str(&format!(" DEFAULT {default}"));
                }
                if not_null {
                    line.push_str(" NOT NULL");
                }
                line
            })
            .collect();
        lines.extend(
            constraints
                .into_iter()
                .map(|(con, def)| format!("    CONSTRAINT {} {def}", quote_ident(&con))),
        );
        let mut ddl = format!(
            "CREATE TABLE {}.{} (\n{}\n);",
            quote_ident(&schema),
            quote_ident(&name),
            lines.join(",\n")
        );
        for (index,) in indexes {
            ddl.push('\n');
            ddl.push_str(&index);
            ddl.push(';');
        }
        Ok(Some(ddl))
    }

    /// Columns whose names (and, on PostgreSQL, types such as `inet`) look like personal
    /// data or credentials, ordered by table and column position. A heuristic: it reads
    /// names, never values, so it cannot leak what it flags.
    pub async fn pii_columns(&self) -> Result<Vec<PiiColumn>, DbToolError> {
        let tables = self.tables().await?;
        let mut out = Vec::new();
        for t in &tables {
            for c in &t.columns {
                if let Some(why) = classify_column(&t.name, &c.name, &c.data_type) {
                    out.push(PiiColumn {
                        table: t.qualified_name(),
                        column: c.name.clone(),
                        why,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Plans `sql` with `EXPLAIN` (never `ANALYZE`: the query is not run) and says what is
    /// slow and which indexes would help. Anything but exactly one `SELECT` or `WITH` query
    /// with no write keyword is refused before it reaches the database.
    pub async fn explain(&self, sql: &str) -> Result<PlanReport, DbToolError> {
        let (query, toks) = sql::validate_query(sql).map_err(|r| DbToolError::Refused {
            reason: r.to_string(),
        })?;
        let shape = sql::shape(&toks);
        let tables = self.tables().await?;
        let indexed = self.leading_index_columns().await?;
        let info = Catalog::new(&tables, indexed);

        let (plan, scans) = match &self.db {
            Db::Sqlite(pool) => self.sqlite_plan(pool, query, &shape).await?,
            Db::Postgres(pool) => self.pg_plan(pool, query).await?,
        };
        Ok(info.report(plan, &scans, &shape))
    }

    /// For each table (qualified name), the columns that lead an index or are its
    /// integer primary key: the columns an equality filter or join can use an index on.
    async fn leading_index_columns(&self) -> Result<HashMap<String, HashSet<String>>, DbToolError> {
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        match &self.db {
            Db::Sqlite(pool) => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT m.name, ii.name FROM sqlite_master m \
                     JOIN pragma_index_list(m.name) il \
                     JOIN pragma_index_info(il.name) ii \
                     WHERE m.type = 'table' AND ii.seqno = 0 AND ii.name IS NOT NULL \
                     UNION \
                     SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND p.pk = 1",
                )
                .fetch_all(pool)
                .await
                .map_err(self.query_err())?;
                for (table, column) in rows {
                    out.entry(table)
                        .or_default()
                        .insert(column.to_ascii_lowercase());
                }
            }
            Db::Postgres(pool) => {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT n.nspname::text, t.relname::text, a.attname::text FROM pg_index x \
                     JOIN pg_class t ON t.oid = x.indrelid \
                     JOIN pg_namespace n ON n.oid = t.relnamespace \
                     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
                )
                .fetch_all(pool)
                .await
                .map_err(self.query_err())?;
                for (schema, table, column) in rows {
                    let key = if schema == "public" {
                        table
                    } else {
                        format!("{schema}.{table}")
                    };
                    out.entry(key).or_default().insert(column);
                }
            }
        }
        Ok(out)
    }

    async fn sqlite_plan(
        &self,
        pool: &SqlitePool,
        query: &str,
        shape: &sql::QueryShape,
    ) -> Result<(String, Vec<Scan>), DbToolError> {
        // Validated above: one SELECT/WITH statement with no write keyword.
        let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
            .persistent(false)
            .fetch_all(pool)
            .await
            .map_err(self.query_err())?;
        let mut nodes: Vec<(i64, i64, String)> = Vec::with_capacity(rows.len());
        for row in rows {
            nodes.push((
                row.try_get(0).map_err(self.query_err())?,
                row.try_get(1).map_err(self.query_err())?,
                row.try_get(3).map_err(self.query_err())?,
            ));
        }
        // Indent each node under its parent.
        let mut depth: HashMap<i64, usize> = HashMap::new();
        let mut plan = String::new();
        let mut scans = Vec::new();
        for (id, parent, detail) in &nodes {
            let d = if *parent == 0 {
                0
            } else {
                depth.get(parent).map_or(0, |p| p + 1)
            };
            depth.insert(*id, d);
            plan.push_str(&"  ".repeat(d));
            plan.push_str(detail);
            plan.push('\n');
            scans.extend(sqlite_scan(detail, shape));
        }
        Ok((plan.trim_end().to_owned(), scans))
    }

    async fn pg_plan(
        &self,
        pool: &PgPool,
        query: &str,
    ) -> Result<(String, Vec<Scan>), DbToolError> {
        let mut tx = pool.begin().await.map_err(self.query_err())?;
        // The session is already read-only by default; this makes the transaction so even
        // if a server or pooler dropped the startup option.
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(self.query_err())?;
        // Validated above: one SELECT/WITH statement with no write keyword.
        let plan: serde_json::Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON, VERBOSE) {query}"
        )))
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(self.query_err())?;
        // Nothing was written; rolling back ends the transaction without a commit.
        tx.rollback().await.map_err(self.query_err())?;

        let root = plan
            .get(0)
            .and_then(|p| p.get("Plan"))
            .ok_or_else(|| DbToolError::Plan {
                target: self.target.clone(),
                detail: "no \"Plan\" in EXPLAIN (FORMAT JSON) output".to_owned(),
            })?;
        let mut text = String::new();
        let mut scans = Vec::new();
        walk_pg_plan(root, 0, &mut text, &mut scans);
        Ok((text.trim_end().to_owned(), scans))
    }
}

/// A table the plan reads in full (or, in SQLite, through an index it builds every time).
#[derive(Debug)]
struct Scan {
    /// The table as the catalog names it (`orders`, `analytics.events`), if known.
    table: String,
    /// What the plan said, for the finding.
    detail: String,
    /// SQLite built a temporary index for this table: a join or filter column has none.
    automatic_index: Vec<String>,
}

/// Reads one SQLite `EXPLAIN QUERY PLAN` line: `SCAN o`, `SCAN orders USING INDEX …`,
/// `SEARCH o USING AUTOMATIC COVERING INDEX (customer_id=?)`.
fn sqlite_scan(detail: &str, shape: &sql::QueryShape) -> Option<Scan> {
    let resolve = |name: &str| -> Option<String> {
        let key = name.to_ascii_lowercase();
        shape.tables.get(&key).cloned().or(Some(key))
    };
    if let Some(rest) = detail.strip_prefix("SCAN ") {
        let name = rest.split(' ').next()?;
        // A covering-index scan still reads every entry, but not the table: leave it.
        if rest.contains("USING COVERING INDEX")
            || matches!(name, "CONSTANT" | "SUBQUERY")
            || rest.starts_with("CONSTANT ROW")
        {
            return None;
        }
        let table = resolve(name)?;
        // `SCAN oi` names the alias; say which table that is.
        let detail = if table.eq_ignore_ascii_case(name) {
            detail.to_owned()
        } else {
            format!("{detail} ({table})")
        };
        return Some(Scan {
            table,
            detail,
            automatic_index: Vec::new(),
        });
    }
    if let Some(rest) = detail.strip_prefix("SEARCH ")
        && rest.contains("USING AUTOMATIC")
    {
        let name = rest.split(' ').next()?;
        // `(customer_id=? AND status=?)`: the columns SQLite wished it had an index on.
        let cols = rest
            .split_once('(')
            .map(|(_, c)| c.trim_end_matches(')'))
            .unwrap_or("")
            .split(" AND ")
            .filter_map(|p| p.split(['=', '>', '<']).next())
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        return Some(Scan {
            table: resolve(name)?,
            detail: detail.to_owned(),
            automatic_index: cols,
        });
    }
    None
}

/// Renders a PostgreSQL JSON plan node and its children, collecting `Seq Scan`s.
fn walk_pg_plan(node: &serde_json::Value, depth: usize, text: &mut String, scans: &mut Vec<Scan>) {
    let s = |k: &str| node.get(k).and_then(serde_json::Value::as_str);
    let n = |k: &str| node.get(k).and_then(serde_json::Value::as_f64);
    let kind = s("Node Type").unwrap_or("?");
    let mut line = format!("{}{kind}", "  ".repeat(depth));
    if let Some(rel) = s("Relation Name") {
        line.push_str(" on ");
        if let Some(schema) = s("Schema").filter(|s| *s != "public") {
            line.push_str(schema);
            line.push('.');
        }
        line.push_str(rel);
        if let Some(alias) = s("Alias").filter(|a| *a != rel) {
            line.push(' ');
            line.push_str(alias);
        }
    }
    if let Some(index) = s("Index Name") {
        line.push_str(" using ");
        line.push_str(index);
    }
    line.push_str(&format!(
        "  (cost={:.2}..{:.2} rows={})",
        n("Startup Cost").unwrap_or(0.0),
        n("Total Cost").unwrap_or(0.0),
        n("Plan Rows").unwrap_or(0.0)
    ));
    text.push_str(&line);
    text.push('\n');
    for key in [
        "Index Cond",
        "Hash Cond",
        "Merge Cond",
        "Join Filter",
        "Filter",
        "Sort Key",
    ] {
        let value = match node.get(key) {
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(serde_json::Value::Array(v)) => v
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            _ => continue,
        };
        text.push_str(&format!("{}  {key}: {value}\n", "  ".repeat(depth)));
    }
    if kind == "Seq Scan"
        && let Some(rel) = s("Relation Name")
    {
        let table = match s("Schema").filter(|s| *s != "public") {
            Some(schema) => format!("{schema}.{rel}"),
            None => rel.to_owned(),
        };
        let mut detail = format!("Seq Scan on {table}");
        // Saturating float-to-int conversion of a row estimate.
        let rows_out = group_thousands(n("Plan Rows").unwrap_or(0.0).max(0.0).round() as u64);
        match s("Filter") {
            Some(filter) => detail.push_str(&format!(
                " (filter {filter}, estimated {rows_out} rows kept)"
            )),
            None => detail.push_str(&format!(" (estimated {rows_out} rows)")),
        }
        scans.push(Scan {
            table,
            detail,
            automatic_index: Vec::new(),
        });
    }
    if let Some(children) = node.get("Plans").and_then(serde_json::Value::as_array) {
        for child in children {
            walk_pg_plan(child, depth + 1, text, scans);
        }
    }
}

/// What the report needs to know about the database: sizes, columns and indexes.
struct Catalog<'a> {
    /// Qualified name (and bare name for `main`/`public`) → table.
    tables: HashMap<String, &'a TableInfo>,
    /// Qualified name → columns that lead an index.
    indexed: HashMap<String, HashSet<String>>,
}

impl<'a> Catalog<'a> {
    fn new(tables: &'a [TableInfo], indexed: HashMap<String, HashSet<String>>) -> Catalog<'a> {
        let mut by_name = HashMap::new();
        for t in tables {
            by_name.insert(t.qualified_name().to_ascii_lowercase(), t);
            by_name.entry(t.name.to_ascii_lowercase()).or_insert(t);
        }
        Catalog {
            tables: by_name,
            indexed,
        }
    }

    fn is_indexed(&self, table: &TableInfo, column: &str) -> bool {
        self.indexed
            .get(&table.qualified_name())
            .is_some_and(|cols| cols.iter().any(|c| c.eq_ignore_ascii_case(column)))
    }

    /// The catalog table a predicate's column belongs to: by its qualifier (alias or
    /// table), or, unqualified, the one table of the query that has such a column.
    fn owner(&self, c: &sql::ColumnRef, shape: &sql::QueryShape) -> Option<&'a TableInfo> {
        let has = |t: &&TableInfo| {
            t.columns
                .iter()
                .any(|col| col.name.eq_ignore_ascii_case(&c.column))
        };
        match &c.qualifier {
            Some(q) => {
                let table = shape.tables.get(q).map_or(q.as_str(), String::as_str);
                self.tables.get(table).copied().filter(has)
            }
            None => {
                let mut owners: Vec<&TableInfo> = shape
                    .tables
                    .values()
                    .filter_map(|t| self.tables.get(t.as_str()).copied())
                    .filter(has)
                    .collect();
                owners.sort_by_key(|t| t.qualified_name());
                owners.dedup_by_key(|t| t.qualified_name());
                (owners.len() == 1).then(|| owners[0])
            }
        }
    }

    fn report(&self, plan: String, scans: &[Scan], shape: &sql::QueryShape) -> PlanReport {
        let mut findings = Vec::new();
        let mut suggested: Vec<String> = Vec::new();
        let mut seen_tables = HashSet::new();

        for scan in scans {
            let Some(table) = self.tables.get(&scan.table.to_ascii_lowercase()).copied() else {
                continue; // a CTE or subquery: nothing to index
            };
            let name = table.qualified_name();
            let big = table.rows >= BIG_TABLE_ROWS;
            if !scan.automatic_index.is_empty() {
                findings.push(format!(
                    "{}: SQLite builds a temporary index on {name}({}) every time this query runs, because no index has {} first",
                    scan.detail,
                    scan.automatic_index.join(", "),
                    plural_columns(&scan.automatic_index),
                ));
                push_unique(&mut suggested, create_index(table, &scan.automatic_index));
                continue;
            }
            if !big || !seen_tables.insert(name.clone()) {
                continue;
            }

            // How the query filters and joins this table, and which of those columns no
            // index leads with.
            let mut equality = Vec::new();
            let mut range = Vec::new();
            let mut join = Vec::new();
            for (c, how) in &shape.predicates {
                if self.owner(c, shape).map(|t| t.qualified_name()) != Some(name.clone()) {
                    continue;
                }
                let col = table
                    .columns
                    .iter()
                    .find(|col| col.name.eq_ignore_ascii_case(&c.column))
                    .map_or(c.column.clone(), |col| col.name.clone());
                let list = match how {
                    Use::Equality => &mut equality,
                    Use::Range => &mut range,
                    Use::Join => &mut join,
                };
                if !list.contains(&col) {
                    list.push(col);
                }
            }
            let mut finding = format!(
                "{}: reads all ~{} rows of {name}",
                scan.detail,
                group_thousands(table.rows)
            );
            let filters: Vec<String> = equality.iter().chain(&range).cloned().collect();
            let unindexed_filters: Vec<&String> = filters
                .iter()
                .filter(|c| !self.is_indexed(table, c))
                .collect();
            let unindexed_joins: Vec<&String> = join
                .iter()
                .filter(|c| !self.is_indexed(table, c) && !filters.contains(c))
                .collect();
            if filters.is_empty() && join.is_empty() {
                finding.push_str(" with no filter on it (is a WHERE clause or LIMIT missing?)");
            } else if !unindexed_filters.is_empty() || !unindexed_joins.is_empty() {
                let mut parts = Vec::new();
                if !unindexed_filters.is_empty() {
                    parts.push(format!("the filter on {}", join_names(&unindexed_filters)));
                }
                if !unindexed_joins.is_empty() {
                    parts.push(format!("the join on {}", join_names(&unindexed_joins)));
                }
                finding.push_str(&format!("; no index serves {}", parts.join(" or ")));
            } else {
                finding.push_str(
                    "; its filter and join columns are indexed, so the planner judged a full read cheaper (low selectivity, or stale statistics: ANALYZE)",
                );
            }
            findings.push(finding);

            // Equality columns first, then one range column: the order a B-tree can use.
            if !unindexed_filters.is_empty() {
                let mut cols: Vec<String> = equality.clone();
                cols.extend(range.first().cloned());
                cols.truncate(3);
                if !cols.is_empty() && !self.is_indexed(table, &cols[0]) {
                    push_unique(&mut suggested, create_index(table, &cols));
                } else if let Some(first) = unindexed_filters.first() {
                    push_unique(&mut suggested, create_index(table, &[(*first).clone()]));
                }
            }
            for col in unindexed_joins {
                push_unique(
                    &mut suggested,
                    create_index(table, std::slice::from_ref(col)),
                );
            }
        }
        if plan.contains("USE TEMP B-TREE FOR ORDER BY") {
            findings.push(
                "USE TEMP B-TREE FOR ORDER BY: the result is sorted after it is read; an index on the ORDER BY columns would return it in order".to_owned(),
            );
        }
        PlanReport {
            plan,
            findings,
            suggested_indexes: suggested,
        }
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn plural_columns(cols: &[String]) -> &'static str {
    if cols.len() == 1 {
        "that column"
    } else {
        "those columns"
    }
}

fn join_names(cols: &[&String]) -> String {
    cols.iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CREATE INDEX idx_orders_customer_id ON orders (customer_id);`
fn create_index(table: &TableInfo, cols: &[String]) -> String {
    let index = format!("idx_{}_{}", table.name, cols.join("_")).to_ascii_lowercase();
    let index: String = index
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let target = if table.schema == "main" || table.schema == "public" {
        quote_ident(&table.name)
    } else {
        format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        )
    };
    let cols: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    format!("CREATE INDEX {index} ON {target} ({});", cols.join(", "))
}

/// An identifier as SQL text: bare when it is plain lowercase, else double-quoted.
fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain && !is_reserved(name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Reserved words that are also plausible table or column names.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "all"
            | "and"
            | "as"
            | "by"
            | "case"
            | "check"
            | "column"
            | "constraint"
            | "create"
            | "default"
            | "desc"
            | "end"
            | "from"
            | "group"
            | "index"
            | "in"
            | "key"
            | "limit"
            | "not"
            | "null"
            | "offset"
            | "on"
            | "or"
            | "order"
            | "references"
            | "select"
            | "table"
            | "to"
            | "union"
            | "unique"
            | "user"
            | "when"
            | "where"
    )
}

/// `12345` → `12,345`.
fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Tables whose rows are people, where a bare `name` column is a person's name.
fn is_person_table(table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    [
        "customer",
        "user",
        "person",
        "people",
        "employee",
        "contact",
        "member",
        "patient",
        "lead",
        "student",
        "staff",
        "account_holder",
        "subscriber",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// What personal data a column looks like it holds, from its name and type.
fn classify_column(table: &str, column: &str, data_type: &str) -> Option<PiiKind> {
    let c = column.to_ascii_lowercase();
    let words: Vec<&str> = c
        .split(|ch: char| !ch.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let contains = |s: &str| c.contains(s);
    let ty = data_type.to_ascii_lowercase();

    // Ordered so that compound names land on the specific kind (`email_address` is an
    // e-mail, `ip_address` an IP, not a postal address).
    if contains("email") || contains("e_mail") {
        return Some(PiiKind::Email);
    }
    if has("ip")
        || contains("ip_addr")
        || contains("ipaddr")
        || has("ipv4")
        || has("ipv6")
        || contains("remote_addr")
        || ty == "inet"
        || ty == "cidr"
    {
        return Some(PiiKind::IpAddress);
    }
    if contains("password")
        || contains("passwd")
        || contains("secret")
        || has("token")
        || contains("api_key")
        || contains("apikey")
        || contains("private_key")
    {
        return Some(PiiKind::Credential);
    }
    if has("ssn")
        || contains("social_security")
        || contains("passport")
        || has("sin")
        || contains("national_id")
        || contains("tax_id")
        || has("tin")
        || has("nino")
        || contains("driver_license")
        || contains("drivers_license")
        || contains("licence_number")
    {
        return Some(PiiKind::GovernmentId);
    }
    if has("dob") || contains("birth") {
        return Some(PiiKind::DateOfBirth);
    }
    if contains("phone")
        || has("mobile")
        || has("msisdn")
        || has("fax")
        || has("tel")
        || has("cell")
    {
        return Some(PiiKind::Phone);
    }
    if contains("card_number")
        || contains("cardnumber")
        || has("pan")
        || has("cvv")
        || has("cvc")
        || contains("credit_card")
        || (has("card") && (has("last4") || has("number") || has("exp")))
        || contains("iban")
        || contains("account_number")
    {
        return Some(PiiKind::Card);
    }
    if contains("address")
        || has("street")
        || has("addr")
        || contains("postal")
        || contains("postcode")
        || has("zip")
        || has("zipcode")
    {
        return Some(PiiKind::Address);
    }
    if has("latitude")
        || has("longitude")
        || has("lat")
        || has("lng")
        || has("lon")
        || contains("geolocation")
    {
        return Some(PiiKind::Location);
    }
    if contains("diagnos")
        || has("icd10")
        || has("icd")
        || contains("medical")
        || contains("health")
        || contains("prescription")
    {
        return Some(PiiKind::Health);
    }
    let name_part = [
        "first", "last", "full", "given", "family", "middle", "maiden", "legal", "display",
    ];
    if contains("firstname")
        || contains("lastname")
        || contains("fullname")
        || contains("surname")
        || (has("name") && words.iter().any(|w| name_part.contains(w)))
        || ((c == "name" || c == "username") && is_person_table(table))
    {
        return Some(PiiKind::Name);
    }
    None
}

// The tests that build the example warehouse on SQLite and PostgreSQL; a child module, so
// that they can reach the pool behind the read-only checks.
#[cfg(test)]
#[path = "warehouse_tests.rs"]
mod warehouse_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_column_names() {
        for (table, col, ty, want) in [
            ("customers", "email", "TEXT", Some(PiiKind::Email)),
            ("customers", "email_address", "TEXT", Some(PiiKind::Email)),
            ("events", "ip_address", "TEXT", Some(PiiKind::IpAddress)),
            ("events", "client", "inet", Some(PiiKind::IpAddress)),
            ("customers", "phone", "TEXT", Some(PiiKind::Phone)),
            ("customers", "mobile_number", "TEXT", Some(PiiKind::Phone)),
            ("customers", "ssn", "TEXT", Some(PiiKind::GovernmentId)),
            (
                "customers",
                "ssn_last4",
                "TEXT",
                Some(PiiKind::GovernmentId),
            ),
            ("customers", "dob", "DATE", Some(PiiKind::DateOfBirth)),
            (
                "customers",
                "date_of_birth",
                "DATE",
                Some(PiiKind::DateOfBirth),
            ),
            (
                "customers",
                "street_address",
                "TEXT",
                Some(PiiKind::Address),
            ),
            ("customers", "postal_code", "TEXT", Some(PiiKind::Address)),
            ("customers", "first_name", "TEXT", Some(PiiKind::Name)),
            ("customers", "name", "TEXT", Some(PiiKind::Name)),
            ("products", "name", "TEXT", None),
            ("payments", "card_last4", "TEXT", Some(PiiKind::Card)),
            ("users", "password_hash", "TEXT", Some(PiiKind::Credential)),
            ("visits", "diagnosis_code", "TEXT", Some(PiiKind::Health)),
            ("orders", "order_id", "INTEGER", None),
            ("orders", "status", "TEXT", None),
            ("products", "shipping_weight", "REAL", None),
            ("orders", "zipper_color", "TEXT", None),
            ("events", "description", "TEXT", None),
        ] {
            assert_eq!(classify_column(table, col, ty), want, "{table}.{col}");
        }
    }

    #[test]
    fn identifiers_and_urls_are_shown_safely() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:5432/app?sslmode=require"),
            "postgres://app:***@db.internal:5432/app?sslmode=require"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("sqlite:/tmp/w.db"), "sqlite:/tmp/w.db");
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused_without_echoing_them() {
        let err = Warehouse::connect("mysql://root:hunter2@db/app")
            .await
            .expect_err("mysql is not supported");
        assert!(matches!(err, DbToolError::UnsupportedUrl { .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_sqlite_file_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.db");
        let err = Warehouse::connect(&format!("sqlite:{}", path.display()))
            .await
            .expect_err("missing file");
        assert!(matches!(err, DbToolError::Connect { .. }), "{err}");
        assert!(!path.exists(), "connect must not create the file");
    }
}
