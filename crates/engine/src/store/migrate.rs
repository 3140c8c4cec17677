//! Versioned migrations embedded in the binary, applied in order, each in a transaction.
//!
//! Hand-written rather than `sqlx::migrate!` because that macro compiles both database
//! drivers a second time for the proc-macro host, which costs minutes on a cold build.
//! A checksum of each applied file is kept, so an edited migration is reported, not rerun.

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version, from 1, increasing.
    pub(crate) version: i64,
    /// Name (file stem).
    pub(crate) name: &'static str,
    /// SQL text, possibly several statements.
    pub(crate) sql: &'static str,
}

impl Migration {
    /// FNV-1a of the SQL text: stable across builds and platforms.
    pub(crate) fn checksum(&self) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.sql.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash as i64
    }
}

/// The statement that creates the bookkeeping table (same in both dialects).
pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS idempipe_migrations (\
     version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum BIGINT NOT NULL, \
     applied_at BIGINT NOT NULL)";
/// Applied migrations.
pub(crate) const SELECT_APPLIED: &str =
    "SELECT version, name, checksum FROM idempipe_migrations ORDER BY version";
/// Records one applied migration.
pub(crate) const INSERT_APPLIED: &str =
    "INSERT INTO idempipe_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)";

/// Compares what the database has applied with what this binary embeds; returns the
/// migrations still to apply.
pub(crate) fn pending(
    embedded: &'static [Migration],
    applied: &[(i64, String, i64)],
) -> Result<Vec<Migration>, crate::error::StoreError> {
    for (version, name, checksum) in applied {
        match embedded.iter().find(|m| m.version == *version) {
            None => {
                return Err(crate::error::StoreError::Migration {
                    version: *version,
                    name: name.clone(),
                    problem: "is applied in the database but unknown to this binary; \
                              upgrade idempipe"
                        .into(),
                });
            }
            Some(m) if m.checksum() != *checksum => {
                return Err(crate::error::StoreError::Migration {
                    version: *version,
                    name: name.clone(),
                    problem: "was applied but has been modified since".into(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(embedded
        .iter()
        .filter(|m| !applied.iter().any(|(v, _, _)| *v == m.version))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    static M: [Migration; 2] = [
        Migration {
            version: 1,
            name: "init",
            sql: "CREATE TABLE a (x INT);",
        },
        Migration {
            version: 2,
            name: "more",
            sql: "CREATE TABLE b (x INT);",
        },
    ];

    #[test]
    fn pending_skips_applied_and_rejects_edits() {
        let applied = vec![(1, "init".to_string(), M[0].checksum())];
        let todo = pending(&M, &applied).unwrap();
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].version, 2);
        let edited = vec![(1, "init".to_string(), 42)];
        let err = pending(&M, &edited).unwrap_err().to_string();
        assert!(err.contains("modified"), "{err}");
        let newer = vec![(9, "future".to_string(), 0)];
        assert!(
            pending(&M, &newer)
                .unwrap_err()
                .to_string()
                .contains("upgrade")
        );
    }
}
