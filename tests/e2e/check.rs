//! `leadhook check` and the least-privilege setup in `sql/`.

use std::time::Duration;

use crate::support::*;

/// `leadhook check` on `config`.
fn check(config: &SidecarConfig) -> Finished {
    leadhook().run(&config.to_toml(), &["check"], &[])
}

#[tokio::test]
async fn check_reports_a_ready_database_and_exits_zero() {
    let db = TestDb::create(shared_cluster(), "check_ok").await;
    let receiver = Receiver::start(0).await.unwrap();
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = check(
        &db.config()
            .webhook(Webhook::to(&receiver, "hook", "/leads")),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for line in [
        "ok       wal_level = logical",
        "ok       role postgres may replicate",
        "ok       table public.leads: primary key (id), replica identity default",
        "will be created",
        "ok       spool \"leadhook\".spool is missing and will be created",
        "ok       webhook \"hook\": POST http://127.0.0.1",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("problem"), "{stdout}");
}

#[tokio::test]
async fn check_lists_each_problem_on_its_own_line_and_exits_non_zero() {
    let db = TestDb::create(shared_cluster(), "check_bad").await;
    db.sql
        .batch_execute("CREATE TABLE raw_leads (email text, score text, notes text)")
        .await
        .unwrap();
    let config = db.config().with(|c| {
        c.source.table = Some("raw_leads".into());
        c.source.create = Some(false);
        let absent = [
            "company",
            "first_name",
            "last_name",
            "phone",
            "position",
            "twitter",
            "linkedin",
        ];
        for field in absent {
            c.source.columns.insert(field.into(), Column::Absent(false));
        }
        let site = Column::Named("site".into());
        c.source.columns.insert("website".into(), site);
    });
    let Finished { code, stdout, .. } = check(&config);
    assert_eq!(code, Some(1), "{stdout}");
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("problem"))
        .collect();
    for expected in [
        "table public.raw_leads has no primary key",
        "source.columns.website: column \"site\" not found in public.raw_leads",
        "source.columns.score: column \"score\" has type text; score needs smallint, integer or bigint",
        "does not exist and source.create = false",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("no enabled webhook receives save_lead"),
        "{stdout}"
    );
}

#[tokio::test]
async fn run_refuses_to_start_on_a_missing_table_and_says_so() {
    let db = TestDb::create(shared_cluster(), "run_bad").await;
    let config = db
        .config()
        .with(|c| c.source.table = Some("public.nope".into()));
    let Finished { code, stderr, .. } = leadhook().run(&config.to_toml(), &["run"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("source.table: table public.nope does not exist"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_explains_wal_level_and_missing_replication_rights() {
    let cluster = start_cluster(ClusterOptions {
        wal_level: WalLevel::Replica,
        ..ClusterOptions::default()
    });
    let db = TestDb::create(&cluster, "check_wal").await;
    db.sql
        .batch_execute("CREATE ROLE plain LOGIN PASSWORD 'plain'; GRANT SELECT ON leads TO plain;")
        .await
        .unwrap();
    let Finished { code, stdout, .. } = check(&db.config_as("plain", "plain"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("problem  wal_level is \"replica\", logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"), "{stdout}");
    assert!(
        stdout.contains("problem  role plain may not replicate"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_explains_a_role_that_may_not_read_the_table() {
    let db = TestDb::create(shared_cluster(), "check_select").await;
    let role = format!("{}_ro", db.name);
    db.sql
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw'"
        ))
        .await
        .unwrap();
    let Finished { code, stdout, .. } = check(&db.config_as(&role, "pw"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("problem  the role may not SELECT from public.leads: run GRANT SELECT ON public.leads TO <role>;"), "{stdout}");
}

#[tokio::test]
async fn check_reports_an_unreachable_database() {
    let Finished { code, stdout, .. } = check(&SidecarConfig::new(
        "postgres://u:pw@127.0.0.1:1/db?connect_timeout=2",
    ));
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("problem  cannot connect to postgres://u@127.0.0.1:1/db"),
        "{stdout}"
    );
}

#[tokio::test]
async fn environment_overrides_the_file() {
    let db = TestDb::create(shared_cluster(), "check_env").await;
    let config = db.config().with(|c| {
        c.database.url = "postgres://wrong@127.0.0.1:1/nothing?sslmode=disable".into();
    });
    let url = format!("{}?sslmode=disable", db.url);
    let Finished { code, stdout, .. } = leadhook().run(
        &config.to_toml(),
        &["check"],
        &[("LEADHOOK_DATABASE__URL", &url)],
    );
    assert_eq!(code, Some(0), "{stdout}");
}

/// The DBA's script in sql/ gives a role just enough to stream, with the
/// publication and slot made by hand (create = false), over md5 auth.
#[tokio::test]
async fn the_least_privilege_setup_in_sql_is_enough_to_stream() {
    let db = TestDb::create(shared_cluster(), "leastpriv").await;
    let role = db.name.replace("leastpriv", "lh");
    let script = std::fs::read_to_string(repo_file("sql/setup.sql"))
        .unwrap()
        .replace("ROLE leadhook", &format!("ROLE {role}"))
        .replace("TO leadhook", &format!("TO {role}"))
        .replace("DATABASE app", &format!("DATABASE {}", db.name))
        .replace("leadhook_leads", &db.name)
        .replace("'leadhook'", &format!("'{}'", db.name));
    // One statement at a time, as `psql -f` runs it (a slot cannot be
    // created in a transaction that has written).
    db.sql
        .batch_execute("SET password_encryption = 'md5'")
        .await
        .unwrap();
    let code: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        db.sql
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    // Not a Scenario: the script needs the database's name, and check runs first.
    let receiver = Receiver::start(0).await.unwrap();
    let config = db
        .config_as(&role, "change-me")
        .webhook(Webhook::to(&receiver, "hook", "/leads"))
        .with(|c| c.source.create = Some(false));
    let Finished { code, stdout, .. } = check(&config);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("backfill table"), "{stdout}");
    // A deployment from before backfills, whose DBA has not run the new
    // script yet: it still streams, and is told what it lacks.
    db.sql
        .batch_execute("DROP TABLE leadhook.backfill_progress, leadhook.backfills")
        .await
        .unwrap();
    let Finished { code, stdout, .. } = check(&config);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("backfill table")
            && stdout.contains("until then backfills are unavailable"),
        "{stdout}"
    );
    let sidecar = leadhook().start(&config.to_toml());
    db.wait_streaming(&sidecar).await;
    sidecar.wait_log("backfills are unavailable").await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('least@example.com')")
        .await
        .unwrap();
    let got = receiver
        .wait_for("/leads", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(data(&got[0])["email"], "least@example.com");
}

#[tokio::test]
async fn check_reports_a_publication_row_filter_and_a_column_list_that_would_drop_leads() {
    let db = TestDb::create(shared_cluster(), "check_filter").await;
    db.sql
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE leads (id, email, score) WHERE (score > 10)",
            db.name
        ))
        .await
        .unwrap();
    let Finished {
        code, stdout: out, ..
    } = check(&db.config());
    assert_eq!(code, Some(1), "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem")).collect();
    assert!(
        problems
            .iter()
            .any(|l| l.contains("row filter") && l.contains("(score > 10)")),
        "{out}"
    );
    assert!(
        problems.iter().any(|l| l.contains("column list")
            && l.contains("company")
            && l.contains("notes")
            && !l.contains("email")),
        "{out}"
    );
}

#[tokio::test]
async fn check_warns_that_exact_large_values_need_replica_identity_full_and_setup_applies_it() {
    let db = TestDb::create(shared_cluster(), "check_identity").await;
    let config = db.config();
    let Finished {
        code, stdout: out, ..
    } = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warning") && l.contains("REPLICA IDENTITY FULL")),
        "{out}"
    );
    let Finished {
        code,
        stdout: out,
        stderr: err,
        ..
    } = leadhook().run(
        &config.to_toml(),
        &["setup", "--apply", "--replica-identity-full"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ALTER TABLE leads REPLICA IDENTITY FULL;"),
        "{out}"
    );
    let identity: String = db
        .sql
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE oid = 'leads'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(identity, "f");
    let Finished {
        code, stdout: out, ..
    } = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains("REPLICA IDENTITY FULL"),
        "no more warning:\n{out}"
    );
    assert!(out.contains("replica identity full"), "{out}");
}
