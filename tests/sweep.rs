//! `twofold-test-sweep`: removes the scratch databases, JetStream streams and buckets, and
//! temporary folders that test processes which have ended left behind (a killed or interrupted
//! run), and never what a running test uses. `scripts/test` runs it before and after the suite.
//!
//! `--list` removes nothing: it prints every scratch resource and whether its maker is gone.
//! Postgres and NATS are those of the tests: `TWOFOLD_TEST_DATABASE_URL` (a server URL without
//! a database) and `TWOFOLD_TEST_NATS_URL`, with the tests' defaults.

use std::io::Write;

use twofold_tests::scratch::{sweep, SweepTargets};

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
        for (name, _) in &swept.databases {
            let _ = writeln!(out, "database {name}");
        }
        for (name, _) in &swept.streams {
            let kind = if name.starts_with("KV_") {
                "bucket"
            } else {
                "stream"
            };
            let _ = writeln!(out, "{kind} {name}");
        }
        for (path, _) in &swept.dirs {
            let _ = writeln!(out, "folder {}", path.display());
        }
    }
    let buckets = swept
        .streams
        .iter()
        .filter(|(name, _)| name.starts_with("KV_"))
        .count();
    let _ = writeln!(
        out,
        "sweep: test leftovers: {} databases, {} streams, {} buckets, {} folders; removed {} databases, {} streams and buckets, {} folders",
        swept.databases.len(),
        swept.streams.len() - buckets,
        buckets,
        swept.dirs.len(),
        removed(&swept.databases),
        removed(&swept.streams),
        removed(&swept.dirs),
    );
    for problem in &swept.problems {
        let _ = writeln!(out, "sweep: {problem}");
    }
}

fn removed<T>(found: &[(T, bool)]) -> usize {
    found.iter().filter(|(_, removed)| *removed).count()
}
