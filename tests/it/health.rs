//! `/health/live` and `/health/ready`: liveness while the process serves, readiness that
//! checks Postgres and NATS JetStream and names the one that fails.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::nats_server::NatsServer;

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = if path.ends_with("live") {
        Value::Null
    } else {
        response.json().await.unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn the_real_stack_is_ready_when_postgres_and_nats_answer() {
    let app = spawn_app(Store::Postgres).await;

    assert_eq!(get(&app, "/health/live").await.0, StatusCode::OK);
    let (status, body) = get(&app, "/health/ready").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "ready",
            "checks": [
                { "name": "postgres", "status": "up" },
                { "name": "nats", "status": "up" },
            ],
            "failed": [],
        })
    );
}

#[tokio::test]
async fn the_embedded_mode_reports_its_memory_store_ready() {
    let app = spawn_app(Store::Embedded).await;

    let (status, body) = get(&app, "/health/ready").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["checks"],
        json!([{ "name": "memory", "status": "up" }])
    );
    assert_eq!(body["failed"], json!([]));
}

#[tokio::test]
async fn readiness_fails_naming_nats_while_nats_is_down_and_recovers_after() {
    let mut nats = NatsServer::start().await;
    let config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(nats.url()),
    );
    let app = spawn_app_with(config).await;
    assert_eq!(get(&app, "/health/ready").await.0, StatusCode::OK);

    nats.stop();
    let (status, body) = get(&app, "/health/ready").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failed"], json!(["nats"]));
    assert_eq!(
        body["checks"],
        json!([
            { "name": "postgres", "status": "up" },
            { "name": "nats", "status": "down" },
        ])
    );
    assert_eq!(
        get(&app, "/health/live").await.0,
        StatusCode::OK,
        "a dependency down does not make the process dead"
    );

    nats.resume().await;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = get(&app, "/health/ready").await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, StatusCode::OK, "ready again once NATS is back");
}

#[tokio::test]
async fn readiness_fails_naming_postgres_when_its_database_is_gone() {
    let app = spawn_app(Store::Postgres).await;
    let url = app.config.database.url.as_ref().unwrap().expose_secret();
    let (server, name) = url.rsplit_once('/').unwrap();
    app.db.as_ref().unwrap().close().await;
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();

    let (status, body) = get(&app, "/health/ready").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], json!(["postgres"]));
}
