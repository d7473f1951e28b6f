//! `leadhook dead-letters list`, and the query replay shares with it.

use std::io::Write;

use tokio_postgres::Client;

use super::store::explain;
use super::{DeadLetterError, table};
use crate::config::Config;
use crate::database::Database;

/// Connects and selects `columns` of the letters matching the filters, oldest first.
pub(crate) async fn select(
    config: &Config,
    columns: &str,
    webhook: Option<&str>,
    id: Option<&str>,
) -> Result<(Client, Vec<tokio_postgres::Row>), DeadLetterError> {
    let sql = Database::from_url(config.database.url.expose())?
        .sql()
        .await?;
    let table = table(&config.database.schema);
    let query = format!(
        "SELECT {columns} FROM {table}
         WHERE ($1::text IS NULL OR webhook = $1) AND ($2::text IS NULL OR webhook_id = $2) ORDER BY id"
    );
    let rows = sql
        .query(&query, &[&webhook, &id])
        .await
        .map_err(|e| explain(&table, e))?;
    Ok((sql, rows))
}

/// `leadhook dead-letters list`: a table a person can read. Returns the count.
pub async fn list(
    config: &Config,
    webhook: Option<&str>,
    out: &mut impl Write,
) -> Result<usize, DeadLetterError> {
    let (_, rows) = select(
        config,
        "id::text, webhook, webhook_id, attempts::text, coalesce(last_status::text, '-'),
         to_char(last_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), last_error,
         coalesce(payload::json #>> '{data,email}', '')",
        webhook,
        None,
    )
    .await?;
    let header = [
        "ID",
        "WEBHOOK",
        "WEBHOOK-ID",
        "ATTEMPTS",
        "STATUS",
        "LAST ATTEMPT (UTC)",
        "LAST ERROR",
        "EMAIL",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| (0..header.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    write_table(out, &header, &cells)?;
    Ok(rows.len())
}

/// Writes `rows` under `header`, columns aligned: the tables of the CLI.
pub(crate) fn write_table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
