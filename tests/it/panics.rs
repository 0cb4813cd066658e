//! A panic in a handler: the client gets a 500 problem+json, the log names the request, and
//! the connection and the server carry on.

use reqwest::StatusCode;
use twofold_api::startup::TEST_PANIC_PATH;

use crate::helpers::*;

#[tokio::test]
async fn a_panicking_handler_answers_500_problem_json_and_logs_it_with_the_request_id() {
    let app = spawn_app(Store::Embedded).await;
    // One connection for both requests: the panic must not reset it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    let response = http
        .get(format!("{}{TEST_PANIC_PATH}", app.address))
        .send()
        .await
        .expect("an answer, not a reset connection");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("the request id comes back")
        .to_str()
        .unwrap()
        .to_owned();
    let (status, body) = problem(response).await;

    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "internal");
    assert!(
        !body.to_string().contains("on purpose"),
        "the panic message is not sent: {body}"
    );
    let logged = log_lines_of(&request_id);
    assert!(
        logged
            .iter()
            .any(|line| line.contains("ERROR") && line.contains("panicked")),
        "the panic is logged with the request id: {logged:?}"
    );
    let after = http
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}
