//! `twofold-test-sweep`: removes the scratch databases, JetStream streams and buckets, and
//! temporary folders that test processes which have ended left behind (a killed or interrupted
//! run), and never what a running test uses. `scripts/test` runs it before and after the suite.
//!
//! `--list` removes nothing: it prints every scratch resource and whether it is abandoned.
//! Postgres and NATS are those of the tests: `TWOFOLD_TEST_DATABASE_URL` (a server URL without
//! a database) and `TWOFOLD_TEST_NATS_URL`, with the tests' defaults.

use std::io::Write;

use twofold_tests::scratch::{sweep, Found, SweepTargets};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dry_run = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--list") => true,
        Some(_) => {
            eprintln!("usage: twofold-test-sweep [--list]");
            std::process::exit(2);
        }
    };
    let targets = SweepTargets {
        postgres: std::env::var("TWOFOLD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned()),
        nats: std::env::var("TWOFOLD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
        temp_dir: std::env::temp_dir(),
    };
    let swept = sweep(&targets, dry_run).await;
    let mut out = std::io::stderr().lock();
    if dry_run {
        let fate = |abandoned: bool| {
            if abandoned {
                "abandoned"
            } else {
                "kept: its test process runs, or it is untagged and younger than an hour"
            }
        };
        for found in &swept.databases {
            let _ = writeln!(out, "database {} ({})", found.name, fate(found.abandoned));
        }
        for found in &swept.streams {
            let kind = if found.name.starts_with("KV_") {
                "bucket"
            } else {
                "stream"
            };
            let _ = writeln!(out, "{kind} {} ({})", found.name, fate(found.abandoned));
        }
        for found in &swept.dirs {
            let _ = writeln!(
                out,
                "folder {} ({})",
                found.name.display(),
                fate(found.abandoned)
            );
        }
    }
    let buckets = swept
        .streams
        .iter()
        .filter(|found| found.name.starts_with("KV_"))
        .count();
    let _ = writeln!(
        out,
        "sweep: {} databases, {} streams, {} buckets and {} folders of tests; {} {} of them, \
         left by ended test processes",
        swept.databases.len(),
        swept.streams.len() - buckets,
        buckets,
        swept.dirs.len(),
        if dry_run { "could remove" } else { "removed" },
        count(&swept.databases, dry_run)
            + count(&swept.streams, dry_run)
            + count(&swept.dirs, dry_run),
    );
    for problem in &swept.problems {
        let _ = writeln!(out, "sweep: {problem}");
    }
}

/// What was removed (or, in a dry run, could be).
fn count<T>(found: &[Found<T>], dry_run: bool) -> usize {
    found
        .iter()
        .filter(|found| {
            if dry_run {
                found.abandoned
            } else {
                found.removed
            }
        })
        .count()
}
