//! The views follow the log: a view write that fails is repaired by the catch-up projector
//! within seconds, on any of two instances, and `views rebuild` finds what differs from the
//! log and, with `--apply`, repairs it while the service serves. A login, a refresh and a
//! logout change the sessions view in the transaction of their events, and a view the
//! database refuses to change there keeps no event out.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use twofold_api::operator::rebuild_views;

use crate::helpers::*;
use crate::sessions::{refresh, refresh_token};

async fn user_id(app: &TestApp, email: &str) -> String {
    sqlx::query_scalar("SELECT view_id FROM user_view WHERE payload->>'email' = $1")
        .bind(email)
        .fetch_one(app.db.as_ref().unwrap())
        .await
        .unwrap()
}

/// Has the database refuse every update of user `id`'s row of view `table`, until the trigger
/// `refuse_view_write` on it is dropped.
async fn refuse_view_writes(app: &TestApp, table: &str, id: &str) {
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_view_write() RETURNS trigger LANGUAGE plpgsql AS \
            $$ BEGIN RAISE EXCEPTION 'view write refused by the test'; END $$; \
         CREATE TRIGGER refuse_view_write BEFORE UPDATE ON {table} FOR EACH ROW \
            WHEN (OLD.view_id = '{id}') EXECUTE FUNCTION refuse_view_write();"
    ))
    .execute(app.db.as_ref().unwrap())
    .await
    .unwrap();
}

async fn me(app: &TestApp, token: &str) -> Value {
    let response = app.get_with("/auth/test-token", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_view_write_that_failed_after_the_commit_is_repaired_within_seconds() {
    let app = spawn_app(Store::Postgres).await;
    let _second = app.another_instance().await;
    let db = app.db.as_ref().unwrap();
    let email = unique_email("repair");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let token = app.login_token(&email, StatusCode::OK).await;
    let id = user_id(&app, &email).await;

    // Every write of this user's view fails, as in a database blip, while 2FA is turned on.
    refuse_view_writes(&app, "user_view", &id).await;
    assert_eq!(
        app.enable_tfa(&token, "email").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        me(&app, &token).await["tfa_enabled"],
        false,
        "the view write failed"
    );

    sqlx::raw_sql("DROP TRIGGER refuse_view_write ON user_view")
        .execute(db)
        .await
        .unwrap();
    let started = Instant::now();
    while me(&app, &token).await["tfa_enabled"] != true {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the projector did not repair the view"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(me(&app, &token).await["device"]["device_type"], "email");
}

/// Where the sequences of `id`'s events and of their sessions view stand: the last event's,
/// and the view's.
async fn sequences(app: &TestApp, id: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT max(sequence) FROM events WHERE aggregate_id = $1), \
                (SELECT last_sequence FROM session_view WHERE view_id = $1)",
    )
    .bind(id)
    .fetch_one(app.db.as_ref().unwrap())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_login_a_refresh_and_a_logout_change_the_sessions_view_in_the_transaction_of_their_events(
) {
    let app = spawn_app(Store::Postgres).await;
    let db = app.db.as_ref().unwrap();
    let email = unique_email("in-commit");
    app.signup(&signup_body(&email, None)).await;
    app.login_expecting(&email, StatusCode::OK).await;
    let id = user_id(&app, &email).await;
    // Each write of the user's events or sessions view notes its transaction.
    sqlx::raw_sql(&format!(
        "CREATE TABLE writes (written text, sequence bigint, xid bigint); \
         CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
            INSERT INTO writes VALUES (TG_TABLE_NAME, \
                coalesce(to_jsonb(NEW) ->> 'sequence', to_jsonb(NEW) ->> 'last_sequence')::bigint, \
                txid_current()); \
            RETURN NULL; END $$; \
         CREATE TRIGGER note_event AFTER INSERT ON events FOR EACH ROW \
            WHEN (NEW.aggregate_id = '{id}') EXECUTE FUNCTION note_write(); \
         CREATE TRIGGER note_view AFTER INSERT OR UPDATE ON session_view FOR EACH ROW \
            WHEN (NEW.view_id = '{id}') EXECUTE FUNCTION note_write();"
    ))
    .execute(db)
    .await
    .unwrap();
    // A session appended, updated twice, removed.
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let mut token = refresh_token(&tokens);
    for _ in 0..2 {
        let rotated = refresh(&app, &token).await;
        assert_eq!(rotated.status(), StatusCode::OK);
        token = refresh_token(&rotated.json().await.unwrap());
    }
    let access = tokens["access_token"].as_str().unwrap();
    let logout = app.post_with("/auth/logout", access).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    // Each commit's transaction: the sequences of its events, and those its view writes took
    // the view to.
    let writes: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT written, sequence, xid FROM writes ORDER BY sequence, written")
            .fetch_all(db)
            .await
            .unwrap();
    let mut commits: std::collections::BTreeMap<i64, (Vec<i64>, Vec<i64>)> = Default::default();
    for (written, sequence, xid) in &writes {
        let (events, views) = commits.entry(*xid).or_default();
        match written.as_str() {
            "events" => events.push(*sequence),
            _ => views.push(*sequence),
        }
    }
    assert_eq!(commits.len(), 4, "{writes:?}");
    for (events, views) in commits.values() {
        assert_eq!(views, &[*events.iter().max().unwrap()], "{writes:?}");
    }
    let (last, view) = sequences(&app, &id).await;
    assert_eq!(view, last);
}

#[tokio::test]
async fn a_sessions_view_the_database_refuses_to_change_keeps_no_refresh_out() {
    let app = spawn_app(Store::Postgres).await;
    let db = app.db.as_ref().unwrap();
    let email = unique_email("refused-view");
    app.signup(&signup_body(&email, None)).await;
    let token = refresh_token(&app.login_expecting(&email, StatusCode::OK).await);
    let id = user_id(&app, &email).await;
    refuse_view_writes(&app, "session_view", &id).await;
    let (before, _) = sequences(&app, &id).await;
    let rotated = refresh(&app, &token).await;
    assert_eq!(rotated.status(), StatusCode::OK, "the refresh is committed");
    let (last, view) = sequences(&app, &id).await;
    assert_eq!(last, before + 1);
    assert!(view < last, "the view was not changed");
    assert!(String::from_utf8_lossy(&LOGS.lock().unwrap()).contains("committing the events alone"));
    // The next refresh works with the token the first gave.
    let again = refresh(&app, &refresh_token(&rotated.json().await.unwrap())).await;
    assert_eq!(again.status(), StatusCode::OK);

    sqlx::raw_sql("DROP TRIGGER refuse_view_write ON session_view")
        .execute(db)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let (last, view) = sequences(&app, &id).await;
        if view == last {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the projector did not repair the view"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn after_the_journey_a_rebuild_finds_no_difference() {
    let app = spawn_app(Store::Postgres).await;
    crate::journey::journey(&app).await;
    crate::journey::admin_listing(&app).await;

    let report = rebuild_views(&app.config, false).await.unwrap();
    assert_eq!(report.differences, []);
    assert!(report.events > 20, "{} events", report.events);
    assert!(report.events_per_second() > 0.0);
}

#[tokio::test]
async fn a_view_row_corrupted_by_sql_is_reported_and_apply_repairs_it_while_serving() {
    let app = spawn_app(Store::Postgres).await;
    let db = app.db.as_ref().unwrap();
    let email = unique_email("corrupt");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let token = app.login_token(&email, StatusCode::OK).await;
    let id = user_id(&app, &email).await;
    sqlx::query(
        "UPDATE user_view \
         SET payload = jsonb_set(payload::jsonb, '{full_name}', '\"Mallory\"')::json \
         WHERE view_id = $1",
    )
    .bind(&id)
    .execute(db)
    .await
    .unwrap();
    assert_eq!(me(&app, &token).await["full_name"], "Mallory");

    let report = rebuild_views(&app.config, false).await.unwrap();
    let found: Vec<String> = report.differences.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [format!(
            "user {id} view user_view field full_name: live \"Mallory\" rebuilt \"Ada Lovelace\""
        )]
    );

    // Requests keep being answered, each with a whole view, while the rebuilt views go in.
    let reader = {
        let app_http = app.http.clone();
        let url = app.url("/auth/test-token");
        let token = token.clone();
        tokio::spawn(async move {
            let mut names = Vec::new();
            for _ in 0..200 {
                let response = app_http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body: Value = response.json().await.unwrap();
                names.push(body["full_name"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            names
        })
    };
    let applied = rebuild_views(&app.config, true).await.unwrap();
    assert!(applied.applied);
    let names = reader.await.unwrap();
    assert!(names
        .iter()
        .all(|name| name == "Mallory" || name == "Ada Lovelace"));
    // A view read just before the swap may be served from the access cache for up to its
    // bound (1 s); then the repaired one is.
    let mut name = me(&app, &token).await["full_name"].clone();
    for _ in 0..40 {
        if name == "Ada Lovelace" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        name = me(&app, &token).await["full_name"].clone();
    }
    assert_eq!(name, "Ada Lovelace");
    assert_eq!(
        rebuild_views(&app.config, false).await.unwrap().differences,
        []
    );

    // The service goes on writing to the swapped-in views.
    assert_eq!(
        app.enable_tfa(&token, "email").await.status(),
        StatusCode::OK
    );
    assert_eq!(me(&app, &token).await["tfa_enabled"], true);

    // The swapped-in sessions view kept its column's lz4 compression, where the server has it.
    let lz4: bool = sqlx::query_scalar(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    if lz4 {
        for (table, column) in [("session_view", "payload"), ("user_snapshots", "state")] {
            let compression: String = sqlx::query_scalar(
                "SELECT attcompression::text FROM pg_attribute \
                 WHERE attrelid = $1::regclass AND attname = $2",
            )
            .bind(table)
            .bind(column)
            .fetch_one(db)
            .await
            .unwrap();
            assert_eq!(compression, "l", "{table}.{column}");
        }
    }
}

#[tokio::test]
async fn an_admin_rebuilds_the_views_of_the_running_service_over_http() {
    let app = spawn_app(Store::Postgres).await;
    let admin = unique_email("admin");
    assert_eq!(
        app.signup(&signup_body(&admin, None)).await.status(),
        StatusCode::OK
    );
    twofold_api::operator::grant_admin(&app.config, &admin)
        .await
        .unwrap();
    let admin_token = app.login_token(&admin, StatusCode::OK).await;
    let email = unique_email("user");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let user_token = app.login_token(&email, StatusCode::OK).await;
    let rebuild = |token: &str, apply: bool| {
        app.http
            .post(app.url(&format!("/admin/views/rebuild?apply={apply}")))
            .bearer_auth(token)
            .send()
    };

    let (status, body) = problem(rebuild(&user_token, false).await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.admin_only"))
    );

    let id = user_id(&app, &email).await;
    sqlx::query(
        "UPDATE user_view SET payload = jsonb_set(payload::jsonb, '{is_locked}', 'true')::json \
         WHERE view_id = $1",
    )
    .bind(&id)
    .execute(app.db.as_ref().unwrap())
    .await
    .unwrap();
    let response = rebuild(&admin_token, true).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["applied"], true);
    assert_eq!(
        report["differences"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(report["differences"][0]["user"], id.as_str());
    assert_eq!(report["differences"][0]["field"], "is_locked");
    assert_eq!(report["differences"][0]["live"], "true");
    assert_eq!(report["differences"][0]["rebuilt"], "false");
    assert_eq!(me(&app, &user_token).await["is_locked"], false);
}

#[tokio::test]
async fn in_the_embedded_mode_a_configured_admin_rebuilds_the_in_memory_views_over_http() {
    let admin = unique_email("embedded-admin");
    let mut config = crate::helpers::test_config(Store::Embedded, None, None);
    config.accounts.admin_emails = vec![admin.clone()];
    let app = crate::helpers::spawn_app_with(config).await;
    let email = unique_email("embedded-user");
    for address in [&admin, &email] {
        assert_eq!(
            app.signup(&signup_body(address, None)).await.status(),
            StatusCode::OK
        );
    }
    let admin_token = app.login_token(&admin, StatusCode::OK).await;
    let user_token = app.login_token(&email, StatusCode::OK).await;
    let rebuild = |token: &str, apply: bool| {
        app.http
            .post(app.url(&format!("/admin/views/rebuild?apply={apply}")))
            .bearer_auth(token)
            .send()
    };

    let (status, body) = problem(rebuild(&user_token, false).await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.admin_only"))
    );
    for apply in [false, true] {
        let response = rebuild(&admin_token, apply).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let report: Value = response.json().await.unwrap();
        assert_eq!(report["applied"], apply, "{report}");
        assert_eq!(report["differences"], Value::Array(Vec::new()), "{report}");
        assert_eq!(report["users"], 2, "{report}");
        assert!(report["events"].as_u64().unwrap() >= 6, "{report}");
    }
    // The rebuilt views serve: the user is still who they were.
    let me: Value = app
        .get_with("/auth/test-token", &user_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], email.as_str());
}
