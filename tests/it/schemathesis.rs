//! Schemathesis against the embedded mode: every check, the stateful phase on, a fixed seed
//! and a bounded number of examples per operation. Any 5xx, any answer the document does not
//! describe, and any request the document calls valid that the service refuses (or the
//! reverse) fails the test, with schemathesis's report. The hooks in
//! `tests/schemathesis/hooks.py` give each request a token of its own and drop, by name and
//! with the reason, the findings that are not the service's fault.

use std::path::Path;
use std::time::{Duration, Instant};

use twofold_tests::scratch::ScratchDir;

use crate::helpers::{spawn_app_with, test_config, Store};

/// The version `scripts/test` installs; the test refuses to run with another, whose checks
/// and generation would differ.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Test cases per operation and phase: enough to reach every operation's refusals, few enough
/// that the run stays within a few minutes on a 2-core machine.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed and no example database: each run generates the same requests.
const SEED: &str = "20261129";
/// The hook gives every admin-only request a fresh account from this many admin addresses
/// (a run uses about 400).
const ADMIN_ADDRESSES: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_describe() {
    let version = tokio::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .await
        .expect("schemathesis runs (scripts/test installs it)");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.trim().ends_with(SCHEMATHESIS_VERSION),
        "schemathesis {SCHEMATHESIS_VERSION} is pinned, found {version}"
    );
    let admins: Vec<String> = (0..ADMIN_ADDRESSES)
        .map(|index| format!("admin-{index}@schemathesis.test"))
        .collect();
    let mut config = test_config(Store::Embedded, None, None);
    config.accounts.admin_emails = admins.clone();
    let app = spawn_app_with(config).await;
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/hooks.py");
    let work_dir = ScratchDir::new("schemathesis").unwrap();
    let started = Instant::now();

    let run = tokio::process::Command::new("schemathesis")
        .arg("run")
        .arg(format!("{}/openapi.json", app.address))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--generation-database", "none"])
        .args(["--workers", "1"])
        .arg("--no-color")
        .current_dir(work_dir.path())
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("TWOFOLD_SCHEMATHESIS_URL", &app.address)
        .env("TWOFOLD_SCHEMATHESIS_ADMINS", admins.join(","))
        .kill_on_drop(true)
        .output();
    // A bound on a hung run, not a speed requirement.
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis finishes")
        .unwrap();

    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("schemathesis ran for {:.0?}:\n{report}", started.elapsed());
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}",
        output.status
    );
    assert!(
        report.contains("Stateful"),
        "the stateful phase did not run:\n{report}"
    );
}
