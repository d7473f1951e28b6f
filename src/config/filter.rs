//! Per-webhook filters: which leads a webhook receives, for tables shared
//! by many tenants (`filter = { account_id = 42, region = ["eu", "uk"] }`).
//!
//! Each condition is equality with a value, or membership in a list, on one
//! column of the leads table (mapped to a payload field or not), compared on
//! the column's text form, the form both modes carry: pgoutput sends it,
//! and notify mode's trigger captures `column::text`. All conditions must
//! hold. A filter is written the same way in the file (TOML) and in the
//! registry table (a `jsonb` object), so both are read as JSON here.

use std::collections::BTreeMap;

/// A webhook's filter; empty means every lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    conditions: Vec<Condition>,
}

/// One column and the text forms it may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) column: String,
    /// Any of these matches.
    pub(crate) values: Vec<String>,
}

impl Filter {
    /// Reads `{ column = value | [values] }`; a value is a string, a number
    /// or a boolean. Booleans match both of PostgreSQL's text forms (`t`,
    /// which pgoutput sends, and `true`, which `::text` gives).
    pub(crate) fn parse(written: &BTreeMap<String, serde_json::Value>) -> Result<Filter, String> {
        let mut conditions = Vec::with_capacity(written.len());
        for (column, value) in written {
            if column.is_empty() {
                return Err("a column name must not be empty".into());
            }
            let mut values = Vec::new();
            match value {
                serde_json::Value::Array(items) if items.is_empty() => {
                    return Err(format!(
                        "{column}: an empty list matches no lead; remove the webhook or the condition"
                    ));
                }
                serde_json::Value::Array(items) => {
                    for item in items {
                        push_text(column, item, &mut values)?;
                    }
                }
                scalar => push_text(column, scalar, &mut values)?,
            }
            conditions.push(Condition {
                column: column.clone(),
                values,
            });
        }
        Ok(Filter { conditions })
    }

    /// No conditions: every lead matches.
    pub(crate) fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    pub(crate) fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether a lead whose columns read as `value` (text form; `None` for
    /// NULL or a column the change does not carry) passes. NULL never does.
    pub(crate) fn matches<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.conditions.iter().all(|condition| {
            value(&condition.column).is_some_and(|text| condition.values.iter().any(|v| v == text))
        })
    }
}

fn push_text(column: &str, value: &serde_json::Value, out: &mut Vec<String>) -> Result<(), String> {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Number(number) => out.push(number.to_string()),
        serde_json::Value::Bool(flag) => {
            let (short, long) = if *flag { ("t", "true") } else { ("f", "false") };
            out.extend([short.to_owned(), long.to_owned()]);
        }
        serde_json::Value::Null => {
            return Err(format!(
                "{column}: null never matches (a NULL column equals nothing); leave the condition out"
            ));
        }
        _ => {
            return Err(format!(
                "{column}: a value must be a string, a number, a boolean or a list of them"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<Filter, String> {
        Filter::parse(&serde_json::from_str(json).unwrap())
    }

    fn lead<'a>(columns: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        |name| columns.iter().find(|(c, _)| *c == name).map(|(_, v)| *v)
    }

    #[test]
    fn equality_compares_the_text_form_of_numbers_and_strings() {
        let by_account = filter(r#"{"account_id": 42}"#).unwrap();
        assert!(by_account.matches(lead(&[("account_id", "42")])));
        assert!(!by_account.matches(lead(&[("account_id", "43")])));
        assert!(!by_account.matches(lead(&[])), "NULL matches nothing");
    }

    #[test]
    fn a_list_is_membership_and_conditions_are_all_required() {
        let eu = filter(r#"{"region": ["eu", "uk"], "account_id": 7}"#).unwrap();
        assert!(eu.matches(lead(&[("region", "uk"), ("account_id", "7")])));
        assert!(!eu.matches(lead(&[("region", "us"), ("account_id", "7")])));
        assert!(!eu.matches(lead(&[("region", "eu"), ("account_id", "8")])));
    }

    #[test]
    fn booleans_match_both_text_forms_postgres_gives() {
        let active = filter(r#"{"active": true}"#).unwrap();
        assert!(active.matches(lead(&[("active", "t")])));
        assert!(active.matches(lead(&[("active", "true")])));
        assert!(!active.matches(lead(&[("active", "f")])));
    }

    #[test]
    fn an_empty_filter_passes_every_lead() {
        let all = filter("{}").unwrap();
        assert!(all.is_empty());
        assert!(all.matches(lead(&[])));
    }

    #[test]
    fn null_objects_and_empty_lists_are_refused_with_the_column_named() {
        assert!(
            filter(r#"{"region": null}"#)
                .unwrap_err()
                .contains("region")
        );
        assert!(
            filter(r#"{"region": []}"#)
                .unwrap_err()
                .contains("empty list")
        );
        assert!(
            filter(r#"{"meta": {"a": 1}}"#)
                .unwrap_err()
                .contains("meta")
        );
    }
}
