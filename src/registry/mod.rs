//! Webhooks at run time: which webhooks the sidecar should be delivering
//! to now, kept up to date while it runs.
//!
//! Two places say so: the config file's `[[webhooks]]` (the operator's,
//! read again on SIGHUP) and, with `[registry]`, the rows of a table the
//! product's settings page writes (untrusted: see `Config::check_row`). A
//! third says which of them are paused. The sidecar watches the result:
//! a change to the webhooks restarts its session with the new set (see
//! `sidecar`), a pause only switches a webhook to the spool.
//!
//! - `table`: the registry table, its triggers, reading its rows.
//! - `pauses`: the durable pause flags.
//! - `status`: what the running sidecar reports of each webhook, and
//!   `leadhook webhooks list`.
//! - `watch`: the task that reads all of it and hands on what changed.
//! - `list` and `commands`: `leadhook webhooks list`, `test`, `pause`
//!   and `resume`.

mod commands;
pub(crate) mod list;
pub(crate) mod pauses;
pub(crate) mod status;
pub(crate) mod table;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::config::{Config, WebhookConfig};
use table::RawRow;

pub use commands::{WebhookError, pause, replay, test};
pub use list::{ListError, list};
pub use table::TableError;

pub(crate) use watch::start;

/// The webhooks wanted now: the file's and the table's valid rows.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    /// The file's config as last (re)loaded.
    pub(crate) config: Config,
    /// The registry rows that are valid webhooks.
    pub(crate) rows: Vec<WebhookConfig>,
    /// The rows that are not, by name, with what is wrong.
    pub(crate) invalid: BTreeMap<String, Vec<String>>,
    /// Whether the database was read yet (the table's rows and the pauses):
    /// until then the rows are unknown, not absent.
    pub(crate) looked: bool,
}

impl Wanted {
    /// The file's webhooks first, then the table's.
    pub(crate) fn webhooks(&self) -> impl Iterator<Item = &WebhookConfig> {
        self.config.webhooks.iter().chain(&self.rows)
    }

    /// Whether a session must restart to apply `other`: a webhook or the
    /// delivery policy differs.
    pub(crate) fn differs_from(&self, other: &Wanted) -> bool {
        !self.webhooks().eq(other.webhooks())
            || self.config.delivery != other.config.delivery
            || self.config.memory != other.config.memory
    }
}

/// Checks registry rows against `config` (names unique across the file and
/// the table, `${VAR}` under the prefix, no private networks unless
/// allowed, filter columns the table has when `columns` is known).
pub(crate) fn check_rows(
    config: &Config,
    rows: &[RawRow],
    columns: Option<&BTreeSet<String>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<WebhookConfig>, BTreeMap<String, Vec<String>>) {
    let mut taken: HashSet<String> = config.webhooks.iter().map(|h| h.name.clone()).collect();
    let mut valid = Vec::new();
    let mut invalid = BTreeMap::new();
    for raw in rows {
        let key = format!("registry row {:?}", raw.name);
        let checked = raw
            .parse()
            .map_err(|problem| vec![format!("{key}.{problem}")])
            .and_then(|row| config.check_row(row, &mut taken, env))
            .and_then(|hook| {
                let mut problems: Vec<String> = hook
                    .mode_problem(&key, config.source.mode)
                    .into_iter()
                    .collect();
                if hook.public_only
                    && let Err(problem) = crate::delivery::guard::check_host(hook.url.expose())
                {
                    problems.push(format!("{key}.url: {problem}"));
                }
                if let Some(columns) = columns {
                    let table = config.table();
                    problems.extend(crate::setup::table::unknown_filter_columns(
                        &key, &hook, columns, &table,
                    ));
                }
                if problems.is_empty() {
                    Ok(hook)
                } else {
                    Err(problems)
                }
            });
        match checked {
            Ok(hook) => valid.push(hook),
            Err(problems) => {
                // A clash is this row's problem; the name stays the file's.
                invalid.insert(raw.name.clone(), problems);
            }
        }
    }
    (valid, invalid)
}

/// Registry rows and what is wrong with the invalid ones.
pub(crate) type Checked = (Vec<WebhookConfig>, BTreeMap<String, Vec<String>>);

/// Reads the registry table now and checks its rows as the running sidecar
/// does, though with this process's environment (a command's, which may
/// not be the sidecar's), against `columns` when given. No `[registry]`,
/// or no table yet (the sidecar creates it), is no rows.
pub(crate) async fn read_rows(
    sql: &tokio_postgres::Client,
    config: &Config,
    columns: Option<&BTreeSet<String>>,
) -> Result<Checked, table::TableError> {
    let Some(registry) = &config.registry else {
        return Ok(Default::default());
    };
    let rows = match table::read(sql, &registry.table).await {
        Ok(rows) => rows,
        Err(table::TableError::Missing(_)) => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let env = |name: &str| std::env::var(name).ok();
    Ok(check_rows(config, &rows, columns, &env))
}

/// `leadhook check`'s look at the registry table (see [`read_rows`]), its
/// rows' filters checked against the leads table's columns.
pub(crate) async fn check_table(config: &Config) -> Result<Checked, String> {
    if config.registry.is_none() {
        return Ok(Default::default());
    }
    let db = crate::database::Database::from_url(config.database.url.expose())
        .map_err(|e| e.to_string())?;
    let sql = db.sql().await.map_err(|e| e.to_string())?;
    let columns = crate::setup::table::column_names(&sql, &config.table())
        .await
        .map_err(|e| crate::database::with_causes(&e))?;
    read_rows(&sql, config, columns.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// What a reload changes, by webhook name, for the log and for retiring
/// what the removed ones still hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Webhooks that now receive `save_lead` and did not.
    pub(crate) added: Vec<String>,
    /// Webhooks that received it and now do not, with why (disabled, removed).
    pub(crate) retired: Vec<(String, String)>,
    /// Webhooks that go on, and which of their settings changed.
    pub(crate) changed: Vec<(String, Vec<&'static str>)>,
}

impl Changes {
    pub(crate) fn between(before: &[WebhookConfig], after: &[WebhookConfig]) -> Changes {
        let mut changes = Changes::default();
        for old in before.iter().filter(|h| h.receives_save_lead()) {
            match find(after, &old.name) {
                // The same name from elsewhere is another webhook: it must
                // not inherit this one's place or spooled changes.
                Some(new) if new.origin != old.origin => changes.retired.push((
                    old.name.clone(),
                    format!(
                        "the webhook was replaced by one of the same name in the {}",
                        origin_place(new)
                    ),
                )),
                Some(new) if new.receives_save_lead() => {
                    let changed = new.changes_from(old);
                    if !changed.is_empty() {
                        changes.changed.push((old.name.clone(), changed));
                    }
                }
                Some(_) => changes
                    .retired
                    .push((old.name.clone(), "the webhook was disabled".to_owned())),
                None => changes.retired.push((
                    old.name.clone(),
                    format!(
                        "the webhook was removed (it was in the {})",
                        origin_place(old)
                    ),
                )),
            }
        }
        for new in after.iter().filter(|h| h.receives_save_lead()) {
            let kept = find(before, &new.name)
                .is_some_and(|old| old.receives_save_lead() && old.origin == new.origin);
            if !kept {
                changes.added.push(new.name.clone());
            }
        }
        changes
    }
}

fn find<'a>(list: &'a [WebhookConfig], name: &str) -> Option<&'a WebhookConfig> {
    list.iter().find(|h| h.name == name)
}

fn origin_place(hook: &WebhookConfig) -> &'static str {
    match hook.origin {
        crate::config::Origin::File => "config file",
        crate::config::Origin::Table => "registry table",
    }
}

#[cfg(test)]
mod tests;
