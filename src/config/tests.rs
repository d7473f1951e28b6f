use super::*;
use crate::field::Field;

const FULL: &str = r#"
[database]
url = "postgres://leadhook@localhost:5432/app"
schema = "leadhook"

[source]
mode = "replication"
table = "public.leads"
slot = "leadhook"
publication = "leadhook_leads"
create = true

[source.columns]
email = "email_address"
twitter = false

[admin]
listen = "127.0.0.1:9187"

[delivery]
timeout = "250ms"

[[webhooks]]
name = "Lead Tracking Webhook"
url = "https://your-service.com/webhooks/leads"
method = "post"
headers = { Authorization = "Bearer t0ken" }

[[webhooks]]
name = "CRM"
url = "http://crm.internal:8080/leads"
method = "PUT"
enabled = false
timeout = "2s"
"#;

fn problems(text: &str) -> Vec<String> {
    Config::from_toml(text).unwrap_err().problems().to_vec()
}

fn with_webhook(fields: &str) -> String {
    format!("[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\n{fields}\n")
}

#[test]
fn the_documented_example_parses_with_defaults_filled_in() {
    let config = Config::from_toml(FULL).unwrap();
    assert_eq!(
        config.table(),
        TableName {
            schema: "public".into(),
            name: "leads".into()
        }
    );
    let [tracking, crm] = &config.webhooks[..] else {
        panic!("two webhooks")
    };
    assert_eq!(tracking.method, "POST");
    assert!(tracking.receives_save_lead());
    assert_eq!(tracking.policy.timeout, Duration::from_millis(250));
    assert_eq!(tracking.policy.max_attempts, None);
    assert_eq!(tracking.policy.retry_for, Duration::from_secs(24 * 3600));
    assert_eq!(tracking.headers["Authorization"].expose(), "Bearer t0ken");
    assert!(!crm.receives_save_lead());
    assert_eq!(crm.policy.timeout, Duration::from_secs(2));
}

#[test]
fn column_mapping_renames_omits_and_defaults_to_the_field_name() {
    let config = Config::from_toml(FULL).unwrap();
    let columns = &config.source.columns;
    assert_eq!(columns.column(Field::Email), Some("email_address"));
    assert_eq!(columns.column(Field::Company), Some("company"));
    assert_eq!(columns.column(Field::Twitter), None);
    assert_eq!(columns.column(Field::Score), Some("score"));
}

#[test]
fn an_unknown_key_is_named() {
    let found = problems("[database]\nurl = \"postgres://x@h/db\"\npasword = \"x\"\n");
    assert!(
        found[0].starts_with("database.pasword: unknown field"),
        "{found:?}"
    );
}

#[test]
fn an_unknown_payload_field_in_columns_is_an_error() {
    let found =
        problems("[database]\nurl = \"postgres://x@h/db\"\n[source.columns]\nfax = \"fax\"\n");
    assert!(found[0].contains("source.columns.fax"), "{found:?}");
}

#[test]
fn a_missing_database_section_is_reported() {
    let found = problems("[source]\ntable = \"leads\"\n");
    assert!(found[0].contains("database"), "{found:?}");
}

#[test]
fn a_bad_duration_says_what_is_expected() {
    let found =
        problems("[database]\nurl = \"postgres://x@h/db\"\n[delivery]\ntimeout = \"soon\"\n");
    assert!(found[0].starts_with("delivery.timeout"), "{found:?}");
    assert!(found[0].contains("\"5s\""), "{found:?}");
}

#[test]
fn webhook_problems_are_all_reported_with_their_keys() {
    let text = format!(
        "{}\n[[webhooks]]\nname = \"a\"\nurl = \"ftp://files/x\"\nmethod = \"GET\"\nevents = [\"delete_lead\"]\n",
        with_webhook("name = \"a\"\nurl = \"not a url\"")
    );
    let found = problems(&text);
    let expected = [
        "webhooks[0].url: not a valid URL",
        "webhooks[1].name: duplicate webhook name \"a\"",
        "webhooks[1].url: scheme \"ftp\" is not supported",
        "webhooks[1].method: unsupported method \"GET\"",
        "webhooks[1].events: unknown event \"delete_lead\"",
    ];
    for prefix in expected {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:?}");
}

#[test]
fn an_empty_webhook_name_is_an_error() {
    let found = problems(&with_webhook("name = \" \"\nurl = \"http://h/\""));
    assert_eq!(found, ["webhooks[0].name: must not be empty"]);
}

#[test]
fn a_missing_environment_variable_is_named_without_showing_other_values() {
    let found = problems(&with_webhook(
        "name = \"a\"\nurl = \"http://h/\"\nheaders = { Authorization = \"Bearer ${LEADHOOK_TEST_SURELY_UNSET}\" }",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("webhooks[0].headers.Authorization: environment variable LEADHOOK_TEST_SURELY_UNSET is not set"));
}

#[test]
fn an_invalid_header_name_is_an_error() {
    let found = problems(&with_webhook(
        "name = \"a\"\nurl = \"http://h/\"\nheaders = { \"Bad Name\" = \"x\" }",
    ));
    assert!(
        found[0].contains("\"Bad Name\" is not a valid HTTP header name"),
        "{found:?}"
    );
}

#[test]
fn notify_mode_has_a_poll_interval() {
    let config = Config::from_toml("[database]\nurl = \"postgres://x@h/db\"\n[source]\nmode = \"notify\"\npoll_interval = \"250ms\"\n").unwrap();
    assert_eq!(config.source.mode, SourceMode::Notify);
    assert_eq!(config.source.poll_interval, Duration::from_millis(250));
}

#[test]
fn debug_output_of_a_config_hides_secrets() {
    let config = Config::from_toml(FULL).unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("t0ken") && !shown.contains("leadhook@localhost"),
        "{shown}"
    );
}

#[test]
fn delivery_policy_defaults_and_per_webhook_overrides() {
    let config = Config::from_toml(&format!(
        "{}max_attempts = 3\non_exhausted = \"block\"\nno_retry_statuses = [410]\n\n[delivery]\ninitial_backoff = \"100ms\"\nmax_in_flight = 8\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ))
    .unwrap();
    let policy = config.webhooks[0].policy.clone();
    assert_eq!(
        policy,
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 3600),
            max_attempts: Some(3),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(300),
            no_retry_statuses: vec![410],
            on_exhausted: OnExhausted::Block,
            max_in_flight: 8,
            spool: true,
            spool_after: Duration::from_secs(30),
            max_retained_wal: 512_000_000,
            memory: 24 << 20,
        }
    );
}

#[test]
fn impossible_delivery_policies_are_refused() {
    let found = problems(&format!(
        "{}max_attempts = 0\nmax_in_flight = 0\nno_retry_statuses = [99]\ninitial_backoff = \"10m\"\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ));
    for expected in [
        "webhooks[0].max_attempts: must be at least 1",
        "webhooks[0].max_in_flight: must be at least 1",
        "webhooks[0].no_retry_statuses: 99 is not an HTTP status",
        "webhooks[0].initial_backoff: must not exceed max_backoff",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:?}"
        );
    }
    let found =
        problems("[database]\nurl = \"postgres://x@h/db\"\n[delivery]\non_exhausted = \"drop\"\n");
    assert!(found[0].starts_with("delivery.on_exhausted"), "{found:?}");
}

#[test]
fn a_bad_signing_secret_is_named_when_the_config_is_loaded() {
    let found = problems(&with_webhook(
        "name = \"a\"\nurl = \"http://h/\"\nsecret = \"whsec_not base64!\"",
    ));
    assert_eq!(
        found,
        ["webhooks[0].secret: a whsec_ secret must be base64 after the prefix"]
    );
}

#[test]
fn a_malformed_whsec_secret_or_an_empty_one_is_refused() {
    assert!(SigningKey::from_secret("whsec_not base64!").is_err());
    assert!(SigningKey::from_secret("").is_err());
    assert_eq!(
        format!("{:?}", SigningKey::from_secret("hunter2").unwrap()),
        "SigningKey([redacted])"
    );
}

#[test]
fn debug_output_hides_parsed_urls_headers_and_signing_keys() {
    let config = Config::from_toml(&with_webhook(
        "name = \"a\"\nurl = \"http://user:url-pa55@h/\"\nheaders = { Authorization = \"Bearer t0ken\" }\nsecret = \"hunter2\"",
    ))
    .unwrap();
    let shown = format!("{config:?}");
    for secret in ["url-pa55", "t0ken", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn spool_and_memory_keys_take_sizes_and_webhooks_override_all_but_memory() {
    let config = Config::from_toml(&format!(
        "{}spool = false\nspool_after = \"5s\"\nmax_retained_wal = \"1GB\"\nretry_for = \"2h\"\n\n[delivery]\nmax_retained_wal = 1000000\nmemory = \"16MiB\"\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ))
    .unwrap();
    let policy = &config.webhooks[0].policy;
    assert!(!policy.spool);
    assert_eq!(policy.spool_after, Duration::from_secs(5));
    assert_eq!(policy.max_retained_wal, 1_000_000_000);
    assert_eq!(policy.retry_for, Duration::from_secs(7200));
    assert_eq!(config.memory, 16 << 20);
    let found = problems(&format!(
        "{}memory = \"64MiB\"\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ));
    assert!(
        found.iter().any(|p| p.contains("memory")),
        "memory is [delivery] only: {found:?}"
    );
}

#[test]
fn bad_sizes_and_zero_windows_are_refused_with_the_key_named() {
    let found = problems(&format!(
        "{}\n[delivery]\nmax_retained_wal = \"lots\"\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ));
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("delivery.max_retained_wal") && p.contains("\"512MB\"")),
        "{found:?}"
    );
    let found = problems(&format!(
        "{}\n[delivery]\nretry_for = \"0s\"\nspool_after = \"0s\"\nmemory = \"1kB\"\n",
        with_webhook("name = \"a\"\nurl = \"http://h/\"")
    ));
    for expected in [
        "delivery.retry_for: must be greater than zero",
        "delivery.spool_after: must be greater than zero",
        "delivery.memory: must be at least 1MiB",
    ] {
        assert!(
            found.iter().any(|p| p == expected),
            "missing {expected:?} in {found:?}"
        );
    }
}

#[test]
fn a_reload_applies_webhooks_and_delivery_and_names_the_sections_that_need_a_restart() {
    let running = Config::from_toml(FULL).unwrap();
    let edited = FULL
        .replace("timeout = \"250ms\"", "timeout = \"1s\"")
        .replace("127.0.0.1:9187", "127.0.0.1:9999")
        .replace("slot = \"leadhook\"", "slot = \"other\"")
        .replace("name = \"CRM\"", "name = \"ERP\"");
    let new = Config::from_toml(&edited).unwrap();
    assert_eq!(running.restart_needed(&new), vec!["[source]", "[admin]"]);
    let applied = running.reload(new);
    assert_eq!(applied.webhooks[1].name, "ERP");
    assert_eq!(applied.delivery.timeout, Duration::from_secs(1));
    assert_eq!(applied.source.slot, "leadhook", "kept until a restart");
    assert_eq!(applied.admin.listen.port(), 9187);
}

#[test]
fn a_registry_needs_a_table_and_a_non_empty_prefix() {
    let problems = problems(
        "[database]\nurl = \"postgres://x@h/db\"\n[registry]\ntable = \"leadhook.webhooks\"\nenv_prefix = \"\"\n",
    );
    assert!(problems[0].contains("registry.env_prefix"), "{problems:?}");
    let missing =
        "[database]\nurl = \"postgres://x@h/db\"\n[registry]\nallow_private_networks = true\n";
    let problems = Config::from_toml(missing).unwrap_err().problems().to_vec();
    assert!(
        problems[0].starts_with("registry: missing field `table`"),
        "{problems:?}"
    );
}

#[test]
fn a_webhook_filter_is_checked_with_its_key_named() {
    let problems = problems(
        "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"https://a.example.com/\"\nfilter = { region = [] }\n",
    );
    assert!(
        problems[0].starts_with("webhooks[0].filter: region"),
        "{problems:?}"
    );
}

#[test]
fn a_lost_slot_is_recreated_unless_told_to_stop_and_its_gap_bounded_by_changed_at() {
    let default = Config::from_toml("[database]\nurl = \"postgres://x@h/db\"\n").unwrap();
    assert_eq!(default.source.on_slot_lost, super::OnSlotLost::Recreate);
    assert_eq!(default.source.changed_at, None);
    assert_eq!(default.source.changed_at_margin, Duration::from_secs(600));
    let stop = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\non_slot_lost = \"stop\"\nchanged_at = \"updated_at\"\nchanged_at_margin = \"1m\"\n",
    )
    .unwrap();
    assert_eq!(stop.source.on_slot_lost, super::OnSlotLost::Stop);
    assert_eq!(stop.source.changed_at.as_deref(), Some("updated_at"));
    assert_eq!(stop.source.changed_at_margin, Duration::from_secs(60));
    let wrong = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\non_slot_lost = \"ignore\"\n",
    )
    .unwrap_err();
    assert!(
        wrong.problems()[0].starts_with("source.on_slot_lost:"),
        "{:?}",
        wrong.problems()
    );
}

#[test]
fn a_shown_url_keeps_scheme_host_port_and_the_first_path_segment_only() {
    let shown = |text: &str| shown_url(&reqwest::Url::parse(text).unwrap());
    assert_eq!(
        shown("https://user:pw@hooks.slack.com/services/T0/B0/s3cret?x=y"),
        "https://hooks.slack.com/services/…"
    );
    assert_eq!(
        shown("http://127.0.0.1:8080/leads"),
        "http://127.0.0.1:8080/leads"
    );
    assert_eq!(shown("https://a.example"), "https://a.example/");
    assert_eq!(shown("https://a.example/x/?t=1"), "https://a.example/x/…");
}

#[test]
fn http2_is_auto_unless_set_and_only_auto_always_or_never() {
    let config = |value: &str| {
        Config::from_toml(&format!(
            "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"https://a.example/\"\n{value}"
        ))
    };
    assert_eq!(config("").unwrap().webhooks[0].http2, Http2::Auto);
    assert_eq!(
        config("http2 = \"always\"").unwrap().webhooks[0].http2,
        Http2::Always
    );
    assert_eq!(
        config("http2 = \"never\"").unwrap().webhooks[0].http2,
        Http2::Never
    );
    let error = config("http2 = \"sometimes\"").unwrap_err();
    assert!(
        error.to_string().contains("sometimes") && error.to_string().contains("always"),
        "{error}"
    );
}

#[test]
fn max_message_size_defaults_to_256_mib_and_refuses_what_ordinary_messages_exceed() {
    let config = Config::from_toml("[database]\nurl = \"postgres://x@h/db\"\n").unwrap();
    assert_eq!(config.source.max_message_size, 256 * 1024 * 1024);
    let config = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\nmax_message_size = \"1GiB\"\n",
    )
    .unwrap();
    assert_eq!(config.source.max_message_size, 1 << 30);
    let error = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\nmax_message_size = \"1KiB\"\n",
    )
    .unwrap_err();
    assert!(
        error.problems()[0].starts_with("source.max_message_size: 1024 bytes is too small"),
        "{:?}",
        error.problems()
    );
}

#[test]
fn a_shard_follows_a_slot_and_publication_of_its_own() {
    let config = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\nslot = \"s\"\npublication = \"p\"\nshard = \"1/3\"\n",
    )
    .unwrap();
    assert_eq!(config.source.slot, "s_1_of_3");
    assert_eq!(config.source.publication, "p_1_of_3");
    assert_eq!(config.source.shard_of(), (1, 3));
    let other = config.for_shard(2);
    assert_eq!(
        (
            other.source.slot.as_str(),
            other.source.publication.as_str()
        ),
        ("s_2_of_3", "p_2_of_3")
    );
    for wrong in ["3/3", "1", "a/2", "0/0"] {
        let error = Config::from_toml(&format!(
            "[database]\nurl = \"postgres://x@h/db\"\n[source]\nshard = \"{wrong}\"\n"
        ))
        .unwrap_err();
        assert!(
            error.problems()[0].starts_with("source.shard:"),
            "{wrong}: {:?}",
            error.problems()
        );
    }
}

#[test]
fn a_webhook_backfill_in_notify_mode_is_refused_with_the_key_named() {
    let error = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[source]\nmode = \"notify\"\n[[webhooks]]\nname = \"a\"\nurl = \"http://h/x\"\nbackfill = true\n",
    )
    .unwrap_err();
    assert!(
        error.problems()[0].starts_with("webhooks[0].backfill: backfills need"),
        "{:?}",
        error.problems()
    );
}
