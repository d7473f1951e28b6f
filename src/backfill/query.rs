//! The SQL a backfill reads the leads table with: in keyset order of the
//! primary key, a batch at a time, each lead mapped to the payload's fields
//! by the same SQL the notify trigger uses.

use postgres_protocol::escape::escape_identifier;

use crate::field::ColumnMap;
use crate::setup::outbox::{lead_object, other_columns_object};
use crate::setup::table::KeyColumn;

/// A batch stops growing past this many bytes (and has at least one row):
/// its rows wait in memory between the watermarks.
pub(crate) const BATCH_BYTES: i64 = 4 << 20;

/// How one session reads the leads table for backfills.
#[derive(Debug, Clone)]
pub(crate) struct ChunkQuery {
    /// `"schema"."table"`.
    table: String,
    key: Vec<KeyColumn>,
    columns: ColumnMap,
    /// Whether some webhook filters on columns (then they are read too).
    with_other_columns: bool,
    /// The shard's condition (`scale-out by shards`), if any.
    shard: Option<String>,
}

impl ChunkQuery {
    pub(crate) fn new(
        table: String,
        key: Vec<KeyColumn>,
        columns: ColumnMap,
        with_other_columns: bool,
        shard: Option<String>,
    ) -> ChunkQuery {
        ChunkQuery {
            table,
            key,
            columns,
            with_other_columns,
            shard,
        }
    }

    /// Counts the leads a run covers.
    pub(crate) fn count(&self, where_sql: Option<&str>) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {}",
            self.leads(where_sql),
            self.conditions(None)
        )
    }

    /// The table as `l`: a run's condition applies inside a subquery of its
    /// own, so that a stray parenthesis in it cannot reach the keyset or
    /// the shard's condition.
    fn leads(&self, where_sql: Option<&str>) -> String {
        match where_sql {
            Some(condition) => format!("(SELECT * FROM {} WHERE ({condition})) l", self.table),
            None => format!("{} l", self.table),
        }
    }

    /// The next batch: `$1` the last key done (text; NULL unless `after`), `$2`
    /// the most rows, `$3` the most bytes. Returns the key as text, the
    /// lead, the other columns (or NULL).
    pub(crate) fn batch(&self, where_sql: Option<&str>, after: bool) -> String {
        let order: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
        let keys: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("l.{} AS k{i}", escape_identifier(&k.name)))
            .collect();
        // The type's output function, as pgoutput sends the key (`::text`
        // differs for some types: booleans, char(n), inet): the lead key
        // must be the stream's, or the lead would take another lane.
        let key_text: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("format('%s', l.{})", escape_identifier(&k.name)))
            .collect();
        let others = match self.with_other_columns {
            true => format!("{}::text", other_columns_object(&self.columns, "l", " ")),
            false => "NULL::text".into(),
        };
        let sized = "octet_length(lead) + coalesce(octet_length(other_columns), 0)";
        format!(
            "SELECT key, lead, other_columns FROM (
                 SELECT *, sum({sized}) OVER (ORDER BY {order}) AS upto FROM (
                     SELECT {keys}, ARRAY[{key_text}] AS key, {lead}::text AS lead, {others} AS other_columns
                     FROM {leads} WHERE {conditions} ORDER BY {ordered} LIMIT $2) batch) sized
             WHERE upto - ({sized}) < $3::int8 ORDER BY {order}",
            order = order.join(", "),
            keys = keys.join(", "),
            key_text = key_text.join(", "),
            lead = lead_object(&self.columns, "l", ", "),
            leads = self.leads(where_sql),
            conditions = self.conditions(Some(after)),
            ordered = self.key_columns().join(", "),
        )
    }

    fn key_columns(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|k| format!("l.{}", escape_identifier(&k.name)))
            .collect()
    }

    /// `after`: `Some(false)` for a first batch (`$1` is NULL then), `None`
    /// for a count (no parameters).
    fn conditions(&self, after: Option<bool>) -> String {
        let mut conditions = Vec::new();
        if after == Some(false) {
            conditions.push("$1::text[] IS NULL".to_owned());
        }
        if after == Some(true) {
            let typed: Vec<String> = self
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("($1::text[])[{}]::{}", i + 1, k.type_name))
                .collect();
            conditions.push(format!(
                "({}) > ({})",
                self.key_columns().join(", "),
                typed.join(", ")
            ));
        }
        if let Some(shard) = &self.shard {
            conditions.push(shard.clone());
        }
        if conditions.is_empty() {
            "true".into()
        } else {
            conditions.join(" AND ")
        }
    }
}

/// A backfilled lead's `webhook-id`: stable per (run, lead), and never a
/// live change's (those begin with the server's hex system id). The key
/// is kept readable when it is short and plain, hashed otherwise.
pub(crate) fn row_id(run: i64, key: &[String]) -> String {
    let plain = |k: &String| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~:@-".contains(&b))
    };
    let joined = key.join(",");
    if key.iter().all(plain) && joined.len() <= 64 {
        return format!("backfill-{run}-{joined}");
    }
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for part in key {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("backfill-{run}-h{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(key: &[(&str, &str)]) -> ChunkQuery {
        let key = key
            .iter()
            .map(|(name, type_name)| KeyColumn {
                name: (*name).into(),
                type_name: (*type_name).into(),
            })
            .collect();
        ChunkQuery::new(
            "\"public\".\"leads\"".into(),
            key,
            ColumnMap::default(),
            false,
            None,
        )
    }

    #[test]
    fn later_batches_start_after_the_last_key_in_key_order() {
        let sql = query(&[("tenant", "integer"), ("id", "bigint")]).batch(None, true);
        assert!(sql.contains(
            "(l.\"tenant\", l.\"id\") > (($1::text[])[1]::integer, ($1::text[])[2]::bigint)"
        ));
        assert!(sql.contains("ORDER BY l.\"tenant\", l.\"id\" LIMIT $2"));
    }

    #[test]
    fn a_condition_is_kept_in_a_subquery_of_its_own() {
        let sql = query(&[("id", "integer")]).count(Some("score > 1) OR (true"));
        assert_eq!(
            sql,
            "SELECT count(*) FROM (SELECT * FROM \"public\".\"leads\" WHERE (score > 1) OR (true)) l WHERE true"
        );
        let batch = query(&[("id", "integer")]).batch(Some("1=1) OR (1=1"), true);
        assert!(
            batch.contains("WHERE (1=1) OR (1=1)) l WHERE (l.\"id\") > "),
            "{batch}"
        );
    }

    #[test]
    fn row_ids_are_stable_per_run_and_lead() {
        assert_eq!(row_id(7, &["42".into()]), "backfill-7-42");
        assert_eq!(row_id(7, &["1".into(), "a-b".into()]), "backfill-7-1,a-b");
        assert_ne!(row_id(7, &["42".into()]), row_id(8, &["42".into()]));
    }

    #[test]
    fn keys_that_are_not_plain_text_are_hashed() {
        let id = row_id(3, &["Zoë Smith".into()]);
        assert!(id.starts_with("backfill-3-h") && id.len() == "backfill-3-h".len() + 32);
        assert!(id.is_ascii());
        assert_ne!(
            row_id(3, &["a,b".into()]),
            row_id(3, &["a".into(), "b".into()])
        );
    }
}
