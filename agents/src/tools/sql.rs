//! A small SQL lexer: enough to refuse anything but one read-only query, and to find which
//! columns a query filters and joins on.
//!
//! This is not a parser. It is deliberately conservative: where SQLite and PostgreSQL would
//! read a text differently (nested comments, backslash escapes, dollar quoting), the text is
//! refused rather than guessed at, so that what this module checked is what the database
//! runs.

use std::collections::HashMap;

/// The longest query accepted for `EXPLAIN`.
pub(crate) const MAX_SQL_LEN: usize = 64 * 1024;

/// Words that make a statement more than a read, wherever they appear outside strings,
/// quoted identifiers and comments. `INTO` catches `SELECT … INTO new_table`; `UPDATE`
/// also catches `FOR UPDATE` locking clauses. Sorted, for binary search.
const FORBIDDEN: &[&str] = &[
    "ALTER", "ANALYZE", "ATTACH", "CALL", "COPY", "CREATE", "DELETE", "DETACH", "DROP", "EXECUTE",
    "GRANT", "INSERT", "INTO", "LOCK", "MERGE", "PRAGMA", "REINDEX", "REVOKE", "SET", "TRUNCATE",
    "UPDATE", "VACUUM",
];

/// One token of SQL text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An unquoted word: a keyword or an identifier, as written.
    Word(String),
    /// A `"quoted identifier"`, unescaped.
    Quoted(String),
    /// A string, number or parameter: a value, never a column.
    Value,
    /// An operator or punctuation: `=`, `<=`, `(`, `.`, `,` …
    Op(String),
}

impl Tok {
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }

    fn is_op_like(&self) -> bool {
        matches!(self, Tok::Op(_))
    }

    fn is_op(&self, o: &str) -> bool {
        matches!(self, Tok::Op(x) if x == o)
    }

    /// An identifier (quoted, or an unquoted word), lowercased when unquoted as both
    /// databases fold (PostgreSQL folds to lowercase; SQLite compares case-insensitively).
    fn ident(&self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            Tok::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }
}

/// Why a text is not one read-only query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the query is empty")]
    Empty,
    #[error("the query is longer than {MAX_SQL_LEN} bytes")]
    TooLong,
    #[error("only one statement can be explained, and this text has more than one")]
    SeveralStatements,
    #[error("only SELECT or WITH queries can be explained, not {0}")]
    NotAQuery(String),
    #[error("{0} is not allowed: only read-only queries can be explained")]
    Forbidden(String),
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    #[error(
        "{0} is not supported in explained queries (it is read differently by SQLite and PostgreSQL)"
    )]
    Ambiguous(&'static str),
}

/// Splits `sql` into tokens, dropping comments and white space, with the byte offset where
/// each token starts.
fn lex(sql: &str) -> Result<(Vec<Tok>, Vec<usize>), Refusal> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let before = out.len();
        let at = i;
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let body = i + 2;
                let close = memchr::memmem::find(&b[body..], b"*/")
                    .ok_or(Refusal::Unterminated("comment"))?;
                // PostgreSQL nests block comments and SQLite does not: refuse the case
                // where they would disagree on where the comment ends.
                if memchr::memmem::find(&b[body..body + close], b"/*").is_some() {
                    return Err(Refusal::Ambiguous("a nested comment"));
                }
                i = body + close + 2;
            }
            b'\'' => {
                // PostgreSQL's E'…' strings take backslash escapes; plain strings may too
                // when standard_conforming_strings is off. SQLite never does.
                let prev_word = matches!(out.last(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("e"))
                    && i > 0
                    && b[i - 1].is_ascii_alphabetic();
                if prev_word {
                    return Err(Refusal::Ambiguous("an E'…' string"));
                }
                let end = quoted_end(b, i, b'\'').ok_or(Refusal::Unterminated("string"))?;
                if memchr::memchr(b'\\', &b[i..end]).is_some() {
                    return Err(Refusal::Ambiguous("a backslash in a string"));
                }
                out.push(Tok::Value);
                i = end;
            }
            b'"' => {
                let end =
                    quoted_end(b, i, b'"').ok_or(Refusal::Unterminated("quoted identifier"))?;
                out.push(Tok::Quoted(sql[i + 1..end - 1].replace("\"\"", "\"")));
                i = end;
            }
            b'$' => {
                // `$1` is a parameter; `$tag$…$tag$` is PostgreSQL's dollar quoting, which
                // SQLite reads as a parameter name.
                let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                if digits == 0 {
                    return Err(Refusal::Ambiguous("dollar quoting"));
                }
                out.push(Tok::Value);
                i += 1 + digits;
            }
            b'?' => {
                // SQLite's `?` and `?NNN` parameters.
                let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                out.push(Tok::Value);
                i += 1 + digits;
            }
            b'0'..=b'9' => {
                let n = b[i..]
                    .iter()
                    .take_while(|d| d.is_ascii_alphanumeric() || **d == b'.')
                    .count();
                out.push(Tok::Value);
                i += n;
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let n = 1 + b[i + 1..]
                    .iter()
                    .take_while(|d| d.is_ascii_alphanumeric() || **d == b'.')
                    .count();
                out.push(Tok::Value);
                i += n;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Tok::Word(sql[start..i].to_owned()));
            }
            _ => {
                let two = sql.get(i..i + 2).unwrap_or("");
                let op = if matches!(two, "<=" | ">=" | "<>" | "!=" | "::" | "||" | "==") {
                    two
                } else {
                    &sql[i..i + 1]
                };
                out.push(Tok::Op(op.to_owned()));
                i += op.len();
            }
        }
        if out.len() > before {
            starts.push(at);
        }
    }
    Ok((out, starts))
}

/// The end (exclusive) of the quoted run that starts at `start`, where a doubled quote is
/// an escaped quote.
fn quoted_end(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let off = memchr::memchr(q, &b[i..])?;
        let at = i + off;
        if b.get(at + 1) == Some(&q) {
            i = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// Checks that `sql` is exactly one SELECT or WITH query that reads only, and returns it
/// without a trailing semicolon, ready to be prefixed with `EXPLAIN`.
pub(crate) fn validate_query(sql: &str) -> Result<(&str, Vec<Tok>), Refusal> {
    if sql.len() > MAX_SQL_LEN {
        return Err(Refusal::TooLong);
    }
    let (mut toks, starts) = lex(sql)?;
    if toks.is_empty() {
        return Err(Refusal::Empty);
    }
    // One statement: a semicolon may only end the text (comments and space may follow).
    let mut text = sql;
    if let Some(semi) = toks.iter().position(|t| t.is_op(";")) {
        if semi + 1 != toks.len() {
            return Err(Refusal::SeveralStatements);
        }
        text = &sql[..starts[semi]];
        toks.pop();
    }
    let first = toks.iter().find(|t| !t.is_op("(")).ok_or(Refusal::Empty)?;
    if !(first.is_word("select") || first.is_word("with")) {
        let shown = match first {
            Tok::Word(w) => w.to_ascii_uppercase(),
            _ => "this".to_owned(),
        };
        return Err(Refusal::NotAQuery(shown));
    }
    for t in &toks {
        if let Tok::Word(w) = t {
            let upper = w.to_ascii_uppercase();
            if FORBIDDEN.binary_search(&upper.as_str()).is_ok() {
                return Err(Refusal::Forbidden(upper));
            }
        }
    }
    Ok((text, toks))
}

/// How a query uses a column in a predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// `col = value`, `col IN (…)`.
    Equality,
    /// `col < value`, `col BETWEEN a AND b`.
    Range,
    /// `a.col = b.col`.
    Join,
}

/// A column reference as written: an optional qualifier (table or alias) and the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnRef {
    pub(crate) qualifier: Option<String>,
    pub(crate) column: String,
}

/// What the query reads and how it filters: tables with their aliases, and the columns
/// used in comparisons.
#[derive(Debug, Default)]
pub(crate) struct QueryShape {
    /// Alias (or the table's own name) → table name, possibly schema-qualified (`s.t`).
    pub(crate) tables: HashMap<String, String>,
    /// Columns compared in the query, in order of appearance.
    pub(crate) predicates: Vec<(ColumnRef, Use)>,
}

/// Words that end a table reference in FROM/JOIN, so they are never taken as an alias.
const NOT_ALIAS: &[&str] = &[
    "cross",
    "except",
    "full",
    "group",
    "having",
    "inner",
    "intersect",
    "join",
    "left",
    "limit",
    "natural",
    "offset",
    "on",
    "order",
    "outer",
    "right",
    "union",
    "using",
    "where",
    "window",
];

/// Reads tables, aliases and compared columns out of a validated query's tokens.
pub(crate) fn shape(toks: &[Tok]) -> QueryShape {
    let mut shape = QueryShape::default();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].is_word("from") || toks[i].is_word("join") {
            i += 1;
            // A comma-separated FROM list: `FROM a x, b y`.
            while let Some((table, next)) = table_name(toks, i) {
                let mut j = next;
                if toks.get(j).is_some_and(|t| t.is_word("as")) {
                    j += 1;
                }
                let alias = toks.get(j).and_then(|t| match t {
                    Tok::Word(w) if !NOT_ALIAS.contains(&w.to_ascii_lowercase().as_str()) => {
                        Some(w.to_ascii_lowercase())
                    }
                    Tok::Quoted(q) => Some(q.clone()),
                    _ => None,
                });
                let bare = table.rsplit('.').next().unwrap_or(&table).to_owned();
                shape.tables.insert(bare, table.clone());
                if let Some(alias) = alias {
                    shape.tables.insert(alias, table);
                    j += 1;
                }
                i = j;
                if toks.get(i).is_some_and(|t| t.is_op(",")) {
                    i += 1;
                    continue;
                }
                break;
            }
            continue;
        }
        let op = match &toks[i] {
            Tok::Op(o) if matches!(o.as_str(), "=" | "==") => Some(Use::Equality),
            Tok::Op(o) if matches!(o.as_str(), "<" | ">" | "<=" | ">=") => Some(Use::Range),
            t if t.is_word("in") => Some(Use::Equality),
            t if t.is_word("between") => Some(Use::Range),
            _ => None,
        };
        if let Some(op) = op {
            let left = column_before(toks, i);
            let right = if matches!(op, Use::Equality | Use::Range) && toks[i].is_op_like() {
                column_after(toks, i + 1)
            } else {
                None
            };
            match (left, right) {
                (Some(l), Some(r)) if op == Use::Equality => {
                    shape.predicates.push((l, Use::Join));
                    shape.predicates.push((r, Use::Join));
                }
                (Some(l), None) => shape.predicates.push((l, op)),
                (None, Some(r)) if value_before(toks, i) => shape.predicates.push((r, op)),
                _ => {}
            }
        }
        i += 1;
    }
    shape
}

/// A table name at `i` (`t`, `s.t`, `"T"`), with the index after it. `None` for a
/// subquery or anything else.
fn table_name(toks: &[Tok], i: usize) -> Option<(String, usize)> {
    let first = toks.get(i)?;
    if matches!(first, Tok::Word(w) if NOT_ALIAS.contains(&w.to_ascii_lowercase().as_str()) || w.eq_ignore_ascii_case("lateral") || w.eq_ignore_ascii_case("select"))
    {
        return None;
    }
    let first = first.ident()?;
    if toks.get(i + 1).is_some_and(|t| t.is_op("."))
        && let Some(second) = toks.get(i + 2).and_then(Tok::ident)
    {
        return Some((format!("{first}.{second}"), i + 3));
    }
    // A function in FROM (`generate_series(…)`) is not a table.
    if toks.get(i + 1).is_some_and(|t| t.is_op("(")) {
        return None;
    }
    Some((first, i + 1))
}

/// The column reference that ends just before `i` (`col` or `q.col`), if the operand is a
/// plain column (not `lower(col)`, not a value).
fn column_before(toks: &[Tok], i: usize) -> Option<ColumnRef> {
    let column = toks.get(i.checked_sub(1)?)?.ident()?;
    if is_keyword_value(&column) {
        return None;
    }
    let qualifier = (i >= 3 && toks[i - 2].is_op("."))
        .then(|| toks[i - 3].ident())
        .flatten();
    Some(ColumnRef { qualifier, column })
}

/// The column reference that starts at `i`, if it is a plain column followed by no call.
fn column_after(toks: &[Tok], i: usize) -> Option<ColumnRef> {
    let first = toks.get(i)?.ident()?;
    if is_keyword_value(&first) {
        return None;
    }
    if toks.get(i + 1).is_some_and(|t| t.is_op(".")) {
        let column = toks.get(i + 2)?.ident()?;
        if toks.get(i + 3).is_some_and(|t| t.is_op("(")) {
            return None;
        }
        return Some(ColumnRef {
            qualifier: Some(first),
            column,
        });
    }
    if toks.get(i + 1).is_some_and(|t| t.is_op("(")) {
        return None;
    }
    Some(ColumnRef {
        qualifier: None,
        column: first,
    })
}

/// True when the operand just before `i` is a literal value (`42 = col`).
fn value_before(toks: &[Tok], i: usize) -> bool {
    i > 0 && matches!(toks[i - 1], Tok::Value)
}

/// Words that are values, not columns, in a comparison.
fn is_keyword_value(w: &str) -> bool {
    matches!(
        w,
        "null"
            | "true"
            | "false"
            | "current_date"
            | "current_timestamp"
            | "current_time"
            | "localtime"
            | "localtimestamp"
            | "select"
            | "not"
            | "and"
            | "or"
            | "case"
            | "when"
            | "then"
            | "else"
            | "end"
            | "exists"
            | "any"
            | "all"
            | "some"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Refusal {
        validate_query(sql).expect_err(sql)
    }

    #[test]
    fn forbidden_words_are_sorted() {
        assert!(FORBIDDEN.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn accepts_one_read_only_query() {
        for sql in [
            "SELECT 1",
            "select * from orders where status = 'shipped';",
            "  WITH x AS (SELECT 1) SELECT * FROM x -- done",
            "(SELECT 1) UNION (SELECT 2)",
            "SELECT 'a;b', \"odd;name\" FROM t /* ; */",
            "SELECT replace(name, 'a', 'b') FROM products",
            "SELECT * FROM t WHERE id = ? AND x = $1",
        ] {
            assert!(validate_query(sql).is_ok(), "{sql}");
        }
        let (text, _) = validate_query("SELECT 1; -- trailing\n").expect("valid");
        assert_eq!(text, "SELECT 1");
        let (text, _) = validate_query("SELECT ';'").expect("valid");
        assert_eq!(text, "SELECT ';'");
    }

    #[test]
    fn refuses_anything_that_could_write() {
        assert!(matches!(refused("DELETE FROM customers"), Refusal::NotAQuery(w) if w == "DELETE"));
        assert_eq!(
            refused("SELECT 1; DROP TABLE x"),
            Refusal::SeveralStatements
        );
        assert_eq!(refused("SELECT 1;;"), Refusal::SeveralStatements);
        assert!(matches!(
            refused("WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d"),
            Refusal::Forbidden(w) if w == "DELETE"
        ));
        assert!(matches!(
            refused("WITH n AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM n"),
            Refusal::Forbidden(_)
        ));
        assert!(
            matches!(refused("SELECT * INTO copy FROM t"), Refusal::Forbidden(w) if w == "INTO")
        );
        assert!(matches!(
            refused("SELECT * FROM t FOR UPDATE"),
            Refusal::Forbidden(_)
        ));
        assert!(matches!(
            refused("EXPLAIN ANALYZE SELECT 1"),
            Refusal::NotAQuery(_)
        ));
        assert!(matches!(
            refused("PRAGMA writable_schema = 1"),
            Refusal::NotAQuery(_)
        ));
        assert_eq!(refused(""), Refusal::Empty);
        assert_eq!(refused("-- nothing"), Refusal::Empty);
        assert_eq!(refused(&"x".repeat(MAX_SQL_LEN + 1)), Refusal::TooLong);
    }

    #[test]
    fn refuses_text_the_two_databases_would_read_differently() {
        assert!(matches!(
            refused("SELECT /* /* */ 1 */ 1"),
            Refusal::Ambiguous(_)
        ));
        assert!(matches!(
            refused("SELECT E'\\'; DELETE FROM t; --'"),
            Refusal::Ambiguous(_)
        ));
        assert!(matches!(
            refused("SELECT 'a\\'; DELETE FROM t"),
            Refusal::Ambiguous(_)
        ));
        assert!(matches!(
            refused("SELECT $$; DELETE FROM t; $$"),
            Refusal::Ambiguous(_)
        ));
        assert_eq!(refused("SELECT 'open"), Refusal::Unterminated("string"));
        assert_eq!(
            refused("SELECT 1 /* open"),
            Refusal::Unterminated("comment")
        );
    }

    #[test]
    fn a_write_keyword_in_a_string_or_identifier_is_just_text() {
        assert!(validate_query("SELECT 'DELETE FROM t' AS note, \"update\" FROM t").is_ok());
    }

    #[test]
    fn shape_finds_tables_aliases_and_predicates() {
        let (_, toks) = validate_query(
            "SELECT c.email, sum(oi.quantity) FROM orders o \
             JOIN customers AS c ON c.customer_id = o.customer_id \
             JOIN order_items oi ON oi.order_id = o.order_id \
             WHERE o.status = 'shipped' AND o.order_date >= '2024-01-01' AND lower(c.email) = 'x' \
             GROUP BY c.email",
        )
        .expect("valid");
        let s = shape(&toks);
        assert_eq!(s.tables["o"], "orders");
        assert_eq!(s.tables["c"], "customers");
        assert_eq!(s.tables["oi"], "order_items");
        assert_eq!(s.tables["orders"], "orders");
        let got: Vec<(Option<&str>, &str, Use)> = s
            .predicates
            .iter()
            .map(|(c, u)| (c.qualifier.as_deref(), c.column.as_str(), *u))
            .collect();
        assert_eq!(
            got,
            [
                (Some("c"), "customer_id", Use::Join),
                (Some("o"), "customer_id", Use::Join),
                (Some("oi"), "order_id", Use::Join),
                (Some("o"), "order_id", Use::Join),
                (Some("o"), "status", Use::Equality),
                (Some("o"), "order_date", Use::Range),
            ]
        );
    }

    #[test]
    fn shape_reads_comma_joins_in_lists_and_reversed_comparisons() {
        let (_, toks) = validate_query(
            "select * from analytics.events e, products p where 42 = e.customer_id \
             and p.category in ('a', 'b') and e.product_id = p.product_id and amount between 1 and 2",
        )
        .expect("valid");
        let s = shape(&toks);
        assert_eq!(s.tables["e"], "analytics.events");
        assert_eq!(s.tables["events"], "analytics.events");
        assert_eq!(s.tables["p"], "products");
        let cols: Vec<(&str, Use)> = s
            .predicates
            .iter()
            .map(|(c, u)| (c.column.as_str(), *u))
            .collect();
        assert_eq!(
            cols,
            [
                ("customer_id", Use::Equality),
                ("category", Use::Equality),
                ("product_id", Use::Join),
                ("product_id", Use::Join),
                ("amount", Use::Range),
            ]
        );
    }
}
