//! SQLite helpers the agent's journal and the server's store share.
use rusqlite::{Connection, Params, Row};

/// Statements run through the connection's statement cache: a hot path runs the same few
/// statements, and parsing them again on every call was a visible part of a command's round
/// trip. (`rusqlite`'s `execute` and `query_row` prepare anew each time.)
pub trait Cached {
    /// `execute` through the cache.
    fn exec(&self, sql: &str, params: impl Params) -> rusqlite::Result<usize>;
    /// `query_row` through the cache.
    fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec(&self, sql: &str, params: impl Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements a connection keeps prepared: more than the hot paths use, so none is evicted.
const STATEMENT_CACHE: usize = 64;

/// Opens a connection whose statement cache holds every statement a hot path runs.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_statements_run_and_are_reused() {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").expect("schema");
        for k in 0..3 {
            assert_eq!(c.exec("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, "x"]).expect("insert"), 1);
        }
        let n: i64 = c.row("SELECT count(*) FROM t WHERE v = ?1", ["x"], |r| r.get(0)).expect("count");
        assert_eq!(n, 3);
        assert!(c.row("SELECT v FROM t WHERE k = ?1", [9], |r| r.get::<_, String>(0)).is_err(), "no such row");
    }
}
