use super::*;

fn config(registry: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[database]
url = "postgres://leadhook@localhost/app"

[[webhooks]]
name = "file"
url = "https://file.example.com/hook"

{registry}
"#
    ))
    .expect("a valid config")
}

fn row(name: &str, url: &str) -> RawRow {
    RawRow {
        name: name.into(),
        url: url.into(),
        method: "POST".into(),
        headers: "{}".into(),
        enabled: true,
        secret: None,
        filter: None,
        backfill: false,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_row_that_takes_a_file_webhooks_name_is_invalid_and_the_file_keeps_it() {
    let config = config("[registry]\ntable = \"leadhook.webhooks\"");
    let rows = [
        row("file", "https://a.example.com/"),
        row("crm", "https://b.example.com/"),
    ];
    let (valid, invalid) = check_rows(&config, &rows, None, &no_env);
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].name, "crm");
    assert!(valid[0].public_only, "rows are untrusted by default");
    assert!(
        invalid["file"][0].contains("duplicate webhook name"),
        "{invalid:?}"
    );
}

#[test]
fn literal_private_addresses_are_refused_unless_allowed() {
    let rows = [row("local", "http://10.0.0.7:8080/hook")];
    let strict = config("[registry]\ntable = \"leadhook.webhooks\"");
    let (_, invalid) = check_rows(&strict, &rows, None, &no_env);
    assert!(invalid["local"][0].contains("non-public"), "{invalid:?}");
    let lenient =
        config("[registry]\ntable = \"leadhook.webhooks\"\nallow_private_networks = true");
    let (valid, invalid) = check_rows(&lenient, &rows, None, &no_env);
    assert!(invalid.is_empty() && !valid[0].public_only);
}

#[test]
fn a_row_may_only_read_variables_under_the_prefix() {
    let config = config("[registry]\ntable = \"leadhook.webhooks\"");
    let env = |name: &str| Some(format!("<{name}>"));
    let mut allowed = row("ok", "https://a.example.com/");
    allowed.headers = r#"{"Authorization": "Bearer ${LEADHOOK_WEBHOOK_TOKEN}"}"#.into();
    let mut foreign = row("foreign", "https://b.example.com/");
    foreign.secret = Some("${LEADHOOK_DATABASE__URL}".into());
    let (valid, invalid) = check_rows(&config, &[allowed, foreign], None, &env);
    assert_eq!(valid.len(), 1);
    assert!(invalid["foreign"][0].contains("not allowed"), "{invalid:?}");
}

#[test]
fn filter_columns_are_checked_when_the_tables_columns_are_known() {
    let config = config("[registry]\ntable = \"leadhook.webhooks\"");
    let mut tenant = row("tenant", "https://a.example.com/");
    tenant.filter = Some(r#"{"account_id": 1}"#.into());
    let columns: BTreeSet<String> = ["id".to_owned(), "email".to_owned()].into();
    let (_, invalid) = check_rows(&config, &[tenant.clone()], Some(&columns), &no_env);
    assert!(invalid["tenant"][0].contains("account_id"), "{invalid:?}");
    let (valid, _) = check_rows(&config, &[tenant], None, &no_env);
    assert_eq!(valid.len(), 1, "unknown columns: not judged");
}

#[test]
fn changes_name_what_was_added_retired_and_changed() {
    let before = config("");
    let mut after = before.clone();
    after.webhooks[0].url = crate::config::Secret::from(
        reqwest::Url::parse("https://moved.example.com/").expect("a URL"),
    );
    let mut added = after.webhooks[0].clone();
    added.name = "added".into();
    after.webhooks.push(added);
    let changes = Changes::between(&before.webhooks, &after.webhooks);
    assert_eq!(changes.added, vec!["added".to_owned()]);
    assert_eq!(changes.changed, vec![("file".to_owned(), vec!["url"])]);

    let mut disabled = after.webhooks.clone();
    disabled[1].enabled = false;
    let changes = Changes::between(&after.webhooks, &disabled[..1]);
    assert_eq!(
        changes.retired,
        vec![(
            "added".to_owned(),
            "the webhook was removed (it was in the config file)".to_owned()
        )]
    );
    let changes = Changes::between(&after.webhooks, &disabled);
    assert_eq!(changes.retired[0].1, "the webhook was disabled");
}

#[test]
fn a_row_taking_over_a_file_webhooks_name_is_another_webhook() {
    let before = config("");
    let mut row = before.webhooks[0].clone();
    row.origin = crate::config::Origin::Table;
    let changes = Changes::between(&before.webhooks, std::slice::from_ref(&row));
    assert_eq!(changes.added, vec!["file".to_owned()], "added afresh");
    assert_eq!(
        changes.retired[0].1,
        "the webhook was replaced by one of the same name in the registry table",
        "the file's webhook retires: its spooled changes become dead letters"
    );
    assert!(changes.changed.is_empty());
}
