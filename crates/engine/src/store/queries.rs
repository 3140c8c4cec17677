//! Named SQL statements read from a backend's `queries.sql`.
//!
//! Each statement starts with a `-- name: NAME` line; comment lines inside it stay with it.
//! The file is embedded with `include_str!`, so the statements are `'static`.

use std::collections::HashMap;

/// The statements of one backend, by name.
#[derive(Debug)]
pub(crate) struct Queries {
    by_name: HashMap<&'static str, &'static str>,
}

impl Queries {
    /// Splits an embedded `queries.sql` into its named statements.
    pub(crate) fn parse(file: &'static str) -> Self {
        let mut by_name = HashMap::new();
        let mut rest = file;
        while let Some(start) = rest.find("-- name: ") {
            let after = &rest[start + "-- name: ".len()..];
            let name_end = after.find('\n').unwrap_or(after.len());
            let name = after[..name_end].trim();
            let body_and_rest = &after[name_end..];
            let body_end = body_and_rest
                .find("-- name: ")
                .unwrap_or(body_and_rest.len());
            let body = body_and_rest[..body_end].trim();
            by_name.insert(name, body);
            rest = &body_and_rest[body_end..];
        }
        Self { by_name }
    }

    /// The statement called `name`; every name the store uses exists in both backends
    /// (checked by a test), so a missing one is a programming error.
    pub(crate) fn get(&self, name: &str) -> &'static str {
        self.by_name
            .get(name)
            .unwrap_or_else(|| panic!("queries.sql has no statement named {name:?}"))
    }

    /// The statement called `name`, if this backend has one.
    pub(crate) fn find(&self, name: &str) -> Option<&'static str> {
        self.by_name.get(name).copied()
    }

    /// The names defined.
    #[cfg(test)]
    pub(crate) fn names(&self) -> std::collections::BTreeSet<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_define_the_same_statements() {
        let sqlite = Queries::parse(include_str!("sqlite/queries.sql"));
        let mut pg = Queries::parse(include_str!("postgres/queries.sql")).names();
        // Only PostgreSQL can wake other processes from inside a transaction, and record
        // outcomes with their fan-in in one statement; it alone needs a lock to migrate
        // (SQLite serialises writers) and has a server clock.
        assert!(pg.remove("notify"));
        assert!(pg.remove("item_record_all"));
        assert!(pg.remove("item_record_claim"));
        assert!(pg.remove("migrate_lock"));
        assert!(pg.remove("db_now"));
        // Only PostgreSQL keeps a counter shard per session, folded when the session ends.
        assert!(pg.remove("stage_counts_fold"));
        // Only SQLite counts claims and outcomes with statements of their own (PostgreSQL
        // with statement triggers).
        let mut sqlite = sqlite.names();
        for name in [
            "item_claim_count",
            "stage_counts_add",
            "stage_completions_add",
        ] {
            assert!(sqlite.remove(name), "{name}");
        }
        // Only SQLite's writer thread inserts spawned items with their links in bulk.
        for name in [
            "item_insert_spawned",
            "group_add_many",
            "item_lookup_many",
            "group_remaining_many",
            "item_wait_insert_many",
            "item_set_has_waiters_many",
            "group_wait_insert_many",
            "item_add_waiting_many",
        ] {
            assert!(sqlite.remove(name), "{name}");
        }
        assert_eq!(sqlite, pg);
        assert!(sqlite.len() > 30);
    }

    /// `item_record_claim` is `item_record_all` with a claim after it: its recording CTEs
    /// (`o` to `wake`) must stay the same text, so a fix to one reaches the other.
    #[test]
    fn record_and_claim_records_as_record_all_does() {
        let pg = Queries::parse(include_str!("postgres/queries.sql"));
        let ctes = |name: &str| {
            let sql = pg.get(name);
            let start = sql.find("WITH o AS").expect("WITH o");
            let end = sql.find("RETURNING w.id\n)").expect("the wake CTE");
            sql[start..end].to_string()
        };
        assert_eq!(ctes("item_record_all"), ctes("item_record_claim"));
    }

    #[test]
    fn statements_keep_their_comments_and_stop_at_the_next_name() {
        let q = Queries::parse("-- name: a\n-- why\nSELECT 1;\n\n-- name: b\nSELECT 2;\n");
        assert_eq!(q.get("a"), "-- why\nSELECT 1;");
        assert_eq!(q.get("b"), "SELECT 2;");
    }
}
