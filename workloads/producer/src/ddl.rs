//! Which table layouts a DDL statement may have changed.
//!
//! The reader sees DDL only as SQL text in QUERY events. This module tokenises
//! that text (skipping comments, reading MySQL/MariaDB executable comments as
//! SQL) and recognises CREATE/ALTER/DROP/RENAME/TRUNCATE TABLE, index and
//! sequence DDL and DROP DATABASE, so [`crate::schema::SchemaCache`] forgets
//! exactly what may be stale. It never fails: a statement it cannot follow
//! means "invalidate everything", because a needless reload costs one query
//! and a missed one would decode rows with a stale layout.

/// A table named by a statement, qualified with the event's default
/// database when the statement did not qualify it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
}

/// Which kind of table DDL a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DdlOp {
    /// CREATE TABLE (including `LIKE` and `... SELECT`) or CREATE SEQUENCE.
    Create,
    /// ALTER TABLE, CREATE INDEX, DROP INDEX, ALTER SEQUENCE.
    Alter,
    /// DROP TABLE or DROP SEQUENCE.
    Drop,
    /// RENAME TABLE (old and new names are both listed).
    Rename,
    /// TRUNCATE TABLE.
    Truncate,
}

/// What a QUERY event's statement means for cached table layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlEffect {
    /// Not a table DDL (BEGIN, COMMIT, GRANT, CREATE VIEW, ...): keep all.
    None,
    /// DDL on temporary tables only: keep all. In ROW format MariaDB 10.11
    /// logs neither `CREATE TEMPORARY TABLE` nor row changes to temporary
    /// tables (checked: no event at all reaches the stream); MIXED or
    /// STATEMENT format may log them, and they never produce row events.
    Temporary,
    /// DDL on these tables: invalidate them.
    Tables {
        /// The kind of statement.
        op: DdlOp,
        /// Every table named (for renames, old and new names).
        tables: Vec<TableRef>,
    },
    /// DROP DATABASE: invalidate every table of it.
    Database(String),
    /// A statement not understood: invalidate everything.
    ///
    /// Unknown statements never fail: a needless invalidation costs one
    /// `information_schema` query per table used afterwards, while a missed
    /// one decodes rows with a stale layout. So the conservative answer is
    /// "all", never "none".
    All,
}

/// One token of SQL, as far as DDL detection cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word: keyword or unquoted identifier.
    Word(String),
    /// A backtick-quoted identifier, unescaped.
    Quoted(String),
    /// A string literal (content irrelevant).
    Str,
    /// Any other punctuation character.
    Punct(char),
}

/// Splits SQL into tokens, skipping comments. MySQL executable comments
/// (`/*!40101 ... */`, MariaDB `/*M!100100 ... */`) are real SQL: their
/// content is tokenised.
fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut open_exec_comments = 0usize;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == Some('*') {
            let exec = at(i + 2) == Some('!') || (at(i + 2) == Some('M') && at(i + 3) == Some('!'));
            if exec {
                i += if at(i + 2) == Some('M') { 4 } else { 3 };
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                open_exec_comments += 1;
            } else {
                i += 2;
                while i < chars.len() && !(at(i) == Some('*') && at(i + 1) == Some('/')) {
                    i += 1;
                }
                i += 2;
            }
        } else if c == '*' && at(i + 1) == Some('/') && open_exec_comments > 0 {
            open_exec_comments -= 1;
            i += 2;
        } else if c == '#'
            || (c == '-' && at(i + 1) == Some('-') && at(i + 2).is_none_or(char::is_whitespace))
        {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '`' {
            let mut ident = String::new();
            i += 1;
            while let Some(c) = at(i) {
                if c == '`' {
                    if at(i + 1) == Some('`') {
                        ident.push('`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                ident.push(c);
                i += 1;
            }
            tokens.push(Token::Quoted(ident));
        } else if c == '\'' || c == '"' {
            i += 1;
            while let Some(d) = at(i) {
                i += 1;
                if d == '\\' {
                    i += 1;
                } else if d == c {
                    if at(i) == Some(c) {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            tokens.push(Token::Str);
        } else if c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() {
            let start = i;
            while at(i)
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii())
            {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// A cursor over tokens with case-insensitive keyword matching.
struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    default_db: &'a str,
}

impl Parser<'_> {
    fn peek_keyword(&self, offset: usize) -> Option<String> {
        match self.tokens.get(self.pos + offset) {
            Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }

    /// Consumes the keyword `kw` if it is next.
    fn eat(&mut self, kw: &str) -> bool {
        if self.peek_keyword(0).as_deref() == Some(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the keyword sequence `kws` if it is next.
    fn eat_all(&mut self, kws: &[&str]) -> bool {
        let matches = kws
            .iter()
            .enumerate()
            .all(|(i, kw)| self.peek_keyword(i).as_deref() == Some(*kw));
        if matches {
            self.pos += kws.len();
        }
        matches
    }

    fn eat_punct(&mut self, p: char) -> bool {
        if self.tokens.get(self.pos) == Some(&Token::Punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        let ident = match self.tokens.get(self.pos)? {
            Token::Word(w) => w.clone(),
            Token::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(ident)
    }

    /// `name` or `db.name`, qualified with the default database.
    fn table_ref(&mut self) -> Option<TableRef> {
        let first = self.ident()?;
        if self.eat_punct('.') {
            let table = self.ident()?;
            Some(TableRef { db: first, table })
        } else if self.default_db.is_empty() {
            None
        } else {
            Some(TableRef {
                db: self.default_db.to_string(),
                table: first,
            })
        }
    }

    /// `a, b, c`.
    fn table_list(&mut self) -> Option<Vec<TableRef>> {
        let mut tables = vec![self.table_ref()?];
        while self.eat_punct(',') {
            tables.push(self.table_ref()?);
        }
        Some(tables)
    }

    /// Skips `DEFINER = user@host` and similar CREATE/ALTER prefixes.
    fn skip_prefix_clauses(&mut self) {
        loop {
            if self.eat("DEFINER") {
                self.eat_punct('=');
                // user, user@host, `user`@`host`, CURRENT_USER[()]
                self.ident();
                self.eat_punct('(');
                self.eat_punct(')');
                if self.eat_punct('@') {
                    self.ident();
                }
            } else if self.eat("ALGORITHM") {
                self.eat_punct('=');
                self.ident();
            } else if self.eat_all(&["SQL", "SECURITY"]) {
                self.ident();
            } else if self.eat("ONLINE") || self.eat("OFFLINE") || self.eat("IGNORE") {
            } else {
                return;
            }
        }
    }

    fn tables(op: DdlOp, tables: Vec<TableRef>) -> DdlEffect {
        DdlEffect::Tables { op, tables }
    }

    fn parse(&mut self) -> Option<DdlEffect> {
        let first = self.peek_keyword(0)?;
        self.pos += 1;
        match first.as_str() {
            "BEGIN" | "COMMIT" | "ROLLBACK" | "XA" | "SAVEPOINT" | "RELEASE" | "SET" | "GRANT"
            | "REVOKE" | "FLUSH" | "ANALYZE" | "OPTIMIZE" | "CHECK" | "REPAIR" | "CHECKSUM"
            | "INSTALL" | "UNINSTALL" | "USE" | "DO" | "INSERT" | "UPDATE" | "DELETE"
            | "REPLACE" | "LOAD" | "SELECT" | "CALL" => Some(DdlEffect::None),
            "CREATE" => self.create(),
            "ALTER" => self.alter(),
            "DROP" => self.drop(),
            "RENAME" => {
                if self.eat("USER") {
                    return Some(DdlEffect::None);
                }
                if !(self.eat("TABLE") || self.eat("TABLES")) {
                    return None;
                }
                self.eat_all(&["IF", "EXISTS"]);
                let mut tables = Vec::new();
                loop {
                    tables.push(self.table_ref()?);
                    if !self.eat("TO") {
                        return None;
                    }
                    tables.push(self.table_ref()?);
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                Some(Self::tables(DdlOp::Rename, tables))
            }
            "TRUNCATE" => {
                self.eat("TABLE");
                Some(Self::tables(DdlOp::Truncate, vec![self.table_ref()?]))
            }
            _ => None,
        }
    }

    fn create(&mut self) -> Option<DdlEffect> {
        self.eat_all(&["OR", "REPLACE"]);
        self.skip_prefix_clauses();
        if self.eat("TEMPORARY") {
            return Some(DdlEffect::Temporary);
        }
        if self.eat("TABLE") || self.eat("SEQUENCE") {
            self.eat_all(&["IF", "NOT", "EXISTS"]);
            return Some(Self::tables(DdlOp::Create, vec![self.table_ref()?]));
        }
        let _ = self.eat("UNIQUE") || self.eat("FULLTEXT") || self.eat("SPATIAL");
        if self.eat("INDEX") {
            return self.index_on();
        }
        let other = self.peek_keyword(0)?;
        matches!(
            other.as_str(),
            "DATABASE"
                | "SCHEMA"
                | "VIEW"
                | "TRIGGER"
                | "PROCEDURE"
                | "FUNCTION"
                | "EVENT"
                | "USER"
                | "ROLE"
                | "SERVER"
                | "AGGREGATE"
                | "PACKAGE"
        )
        .then_some(DdlEffect::None)
    }

    /// `[IF [NOT] EXISTS] index [USING ...] ON table` after CREATE/DROP INDEX.
    fn index_on(&mut self) -> Option<DdlEffect> {
        while self.pos < self.tokens.len() && !self.eat("ON") {
            self.pos += 1;
        }
        Some(Self::tables(DdlOp::Alter, vec![self.table_ref()?]))
    }

    fn alter(&mut self) -> Option<DdlEffect> {
        self.skip_prefix_clauses();
        if self.eat("TABLE") || self.eat("SEQUENCE") {
            self.eat_all(&["IF", "EXISTS"]);
            let mut tables = vec![self.table_ref()?];
            // RENAME [TO|AS] new_name and EXCHANGE PARTITION ... WITH TABLE t
            // at the top level of the ALTER; RENAME COLUMN/INDEX/KEY are not
            // renames of the table.
            let mut depth = 0i32;
            while self.pos < self.tokens.len() {
                if self.eat_punct('(') {
                    depth += 1;
                } else if self.eat_punct(')') {
                    depth -= 1;
                } else if depth == 0 && self.eat("RENAME") {
                    if matches!(
                        self.peek_keyword(0).as_deref(),
                        Some("COLUMN" | "INDEX" | "KEY" | "CONSTRAINT")
                    ) {
                        continue;
                    }
                    let _ = self.eat("TO") || self.eat("AS") || self.eat_punct('=');
                    tables.push(self.table_ref()?);
                } else if depth == 0 && self.eat_all(&["WITH", "TABLE"]) {
                    tables.push(self.table_ref()?);
                } else {
                    self.pos += 1;
                }
            }
            let op = DdlOp::Alter;
            return Some(Self::tables(op, tables));
        }
        let other = self.peek_keyword(0)?;
        matches!(
            other.as_str(),
            "DATABASE"
                | "SCHEMA"
                | "VIEW"
                | "EVENT"
                | "FUNCTION"
                | "PROCEDURE"
                | "USER"
                | "ROLE"
                | "SERVER"
                | "LOGFILE"
                | "TABLESPACE"
                | "INSTANCE"
                | "RESOURCE"
        )
        .then_some(DdlEffect::None)
    }

    fn drop(&mut self) -> Option<DdlEffect> {
        if self.eat("TEMPORARY") {
            return Some(DdlEffect::Temporary);
        }
        if self.eat("TABLE") || self.eat("TABLES") || self.eat("SEQUENCE") {
            self.eat_all(&["IF", "EXISTS"]);
            return Some(Self::tables(DdlOp::Drop, self.table_list()?));
        }
        if self.eat("DATABASE") || self.eat("SCHEMA") {
            self.eat_all(&["IF", "EXISTS"]);
            return Some(DdlEffect::Database(self.ident()?));
        }
        let _ = self.eat("ONLINE") || self.eat("OFFLINE");
        if self.eat("INDEX") {
            return self.index_on();
        }
        let other = self.peek_keyword(0)?;
        matches!(
            other.as_str(),
            "VIEW"
                | "TRIGGER"
                | "PROCEDURE"
                | "FUNCTION"
                | "EVENT"
                | "USER"
                | "ROLE"
                | "SERVER"
                | "PACKAGE"
        )
        .then_some(DdlEffect::None)
    }
}

/// Decides which cached layouts a QUERY event's statement may have changed.
///
/// Recognises CREATE/ALTER/DROP/RENAME/TRUNCATE TABLE (and CREATE/DROP
/// INDEX, sequences, DROP DATABASE), case-insensitively, with or without
/// backticks, qualified or not (unqualified names take `default_db`, the
/// QUERY event's schema), through comments and `/*! ... */` executable
/// comments. Temporary-table DDL yields [`DdlEffect::Temporary`]; statements
/// known not to touch table layouts yield [`DdlEffect::None`]. Anything else
/// (or anything it cannot follow, such as an unqualified name with no
/// default database) yields [`DdlEffect::All`]; this function never fails.
pub fn ddl_touched_tables(default_db: &str, sql: &str) -> DdlEffect {
    let tokens = tokenize(sql);
    if tokens.is_empty() {
        return DdlEffect::None;
    }
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        default_db,
    };
    parser.parse().unwrap_or(DdlEffect::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, table: &str) -> TableRef {
        TableRef {
            db: db.into(),
            table: table.into(),
        }
    }

    fn tables(op: DdlOp, list: &[(&str, &str)]) -> DdlEffect {
        DdlEffect::Tables {
            op,
            tables: list.iter().map(|(d, n)| t(d, n)).collect(),
        }
    }

    #[test]
    fn recognises_create_table_in_all_spellings() {
        for sql in [
            "CREATE TABLE orders (id INT)",
            "create table `orders` (id int)",
            "Create Table If Not Exists orders (id int)",
            "CREATE OR REPLACE TABLE shop.orders (id INT)",
            "  /* hi */ CREATE TABLE `shop`.`orders` LIKE other",
            "CREATE TABLE shop.`orders` AS SELECT 1",
        ] {
            assert_eq!(
                ddl_touched_tables("shop", sql),
                tables(DdlOp::Create, &[("shop", "orders")]),
                "{sql}"
            );
        }
        assert_eq!(
            ddl_touched_tables("x", "CREATE TABLE `we``ird`.`na.me` (a int)"),
            tables(DdlOp::Create, &[("we`ird", "na.me")])
        );
    }

    #[test]
    fn recognises_alter_including_renames() {
        assert_eq!(
            ddl_touched_tables("d", "ALTER TABLE t ADD COLUMN c INT, DROP COLUMN b"),
            tables(DdlOp::Alter, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "alter online ignore table e.t rename column a to b"),
            tables(DdlOp::Alter, &[("e", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "ALTER TABLE t ADD x INT, RENAME TO e.u"),
            tables(DdlOp::Alter, &[("d", "t"), ("e", "u")])
        );
        assert_eq!(
            ddl_touched_tables("d", "ALTER TABLE t RENAME INDEX a TO b, RENAME AS `v`"),
            tables(DdlOp::Alter, &[("d", "t"), ("d", "v")])
        );
        assert_eq!(
            ddl_touched_tables(
                "d",
                "ALTER TABLE t ADD CHECK (x IN (1,2)), ALGORITHM=INPLACE"
            ),
            tables(DdlOp::Alter, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE t2"),
            tables(DdlOp::Alter, &[("d", "t"), ("d", "t2")])
        );
        assert_eq!(
            ddl_touched_tables("d", "CREATE UNIQUE INDEX ix ON t (a)"),
            tables(DdlOp::Alter, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "DROP INDEX `PRIMARY` ON e.t"),
            tables(DdlOp::Alter, &[("e", "t")])
        );
    }

    #[test]
    fn recognises_drop_rename_truncate() {
        assert_eq!(
            ddl_touched_tables("", "DROP TABLE `payments`.`t1` /* generated by server */"),
            tables(DdlOp::Drop, &[("payments", "t1")])
        );
        assert_eq!(
            ddl_touched_tables("d", "DROP TABLE IF EXISTS a, e.b RESTRICT"),
            tables(DdlOp::Drop, &[("d", "a"), ("e", "b")])
        );
        assert_eq!(
            ddl_touched_tables("d", "RENAME TABLE a TO b, e.c TO e.d"),
            tables(
                DdlOp::Rename,
                &[("d", "a"), ("d", "b"), ("e", "c"), ("e", "d")]
            )
        );
        assert_eq!(
            ddl_touched_tables("d", "truncate t"),
            tables(DdlOp::Truncate, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "TRUNCATE TABLE `e`.t"),
            tables(DdlOp::Truncate, &[("e", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "DROP DATABASE IF EXISTS `shop`"),
            DdlEffect::Database("shop".into())
        );
    }

    #[test]
    fn temporary_tables_are_reported_as_such() {
        for sql in [
            "CREATE TEMPORARY TABLE tmp (a int)",
            "create or replace temporary table tmp like t",
            "DROP TEMPORARY TABLE IF EXISTS `tmp` /* generated by server */",
        ] {
            assert_eq!(ddl_touched_tables("d", sql), DdlEffect::Temporary, "{sql}");
        }
    }

    #[test]
    fn non_table_statements_change_nothing() {
        for sql in [
            "BEGIN",
            "COMMIT",
            "XA START 'x'",
            "GRANT SELECT ON *.* TO u",
            "CREATE DATABASE shop",
            "ALTER DATABASE shop CHARACTER SET utf8mb4",
            "CREATE DEFINER=`root`@`localhost` TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW SET NEW.v = 1",
            "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=root@localhost SQL SECURITY INVOKER VIEW v AS SELECT 1",
            "DROP VIEW v",
            "CREATE USER 'a'@'%'",
            "FLUSH PRIVILEGES",
            "ANALYZE TABLE t",
            "# only a comment",
            "",
            "   ",
        ] {
            assert_eq!(ddl_touched_tables("d", sql), DdlEffect::None, "{sql}");
        }
    }

    #[test]
    fn unknown_or_unfollowable_statements_invalidate_all() {
        for (db, sql) in [
            ("d", "FROBNICATE TABLE t"),
            ("d", "CREATE MAGIC THING"),
            ("d", "ALTER TABLE"),
            ("d", "RENAME TABLE a"),
            ("", "CREATE TABLE t (a int)"),
            ("d", "DROP TABLE ,"),
            ("d", "CREATE"),
            ("d", "/* unterminated"),
            ("d", "`weird`"),
            ("d", "'string'"),
        ] {
            let effect = ddl_touched_tables(db, sql);
            assert!(
                matches!(effect, DdlEffect::All | DdlEffect::None),
                "{sql}: {effect:?}"
            );
            if !sql.starts_with("/*") {
                assert_eq!(effect, DdlEffect::All, "{sql}");
            }
        }
    }

    #[test]
    fn executable_comments_are_sql() {
        assert_eq!(
            ddl_touched_tables("d", "/*!40000 ALTER TABLE `t` DISABLE KEYS */"),
            tables(DdlOp::Alter, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "CREATE TABLE t (a int) /*M!100100 PAGE_CHECKSUM=1 */"),
            tables(DdlOp::Create, &[("d", "t")])
        );
        assert_eq!(
            ddl_touched_tables("d", "-- note\nDROP TABLE t -- trailing"),
            tables(DdlOp::Drop, &[("d", "t")])
        );
    }
}
