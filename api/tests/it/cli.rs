//! The `twofold` binary's command line: every subcommand, found by walking clap's command tree
//! (so one added later is covered too), answers `--help` with status 0 and its description.

use std::process::Command;

use clap::CommandFactory;
use twofold_api::Cli;

/// Every subcommand as the words that name it (`["users", "grant-admin"]`), with its `about`.
fn subcommands(command: &clap::Command, path: &[String], found: &mut Vec<(Vec<String>, String)>) {
    for sub in command.get_subcommands() {
        let mut words = path.to_vec();
        words.push(sub.get_name().to_owned());
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        found.push((words.clone(), about));
        subcommands(sub, &words, found);
    }
}

#[test]
fn every_subcommand_answers_help_with_its_description() {
    let mut found = Vec::new();
    subcommands(&Cli::command(), &[], &mut found);
    let names: Vec<String> = found.iter().map(|(words, _)| words.join(" ")).collect();
    for expected in [
        "serve",
        "migrate",
        "check",
        "users",
        "users grant-admin",
        "keys",
        "keys generate",
    ] {
        assert!(names.iter().any(|name| name == expected), "{names:?}");
    }
    for (words, about) in found {
        let name = words.join(" ");
        assert!(!about.is_empty(), "`twofold {name}` has no description");
        let output = Command::new(env!("CARGO_BIN_EXE_twofold"))
            .args(&words)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`twofold {name} --help` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // clap wraps long lines: compare the first words of the description.
        let start: String = about
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            stdout
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&start),
            "`twofold {name} --help` does not describe it ({start}):\n{stdout}"
        );
        assert!(stdout.contains("Usage: twofold"), "{stdout}");
    }
}

#[test]
fn top_level_help_lists_the_settings_with_their_variables() {
    let output = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--config <FILE>",
        "TWOFOLD_CONFIG",
        "--env <ENV>",
        "TWOFOLD_ENV",
        "DATABASE_URL",
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .arg("serv")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("serve"));
}
