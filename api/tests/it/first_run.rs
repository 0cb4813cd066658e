//! A newcomer's first run of the real binary: a port already in use is a configuration
//! problem like the others, the mailer runs from the same build, and the key file
//! `keys generate` writes by default is one `git add .` leaves out.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use twofold_api::Cli;

/// The status of a configuration problem (sysexits.h `EX_CONFIG`).
const EX_CONFIG: i32 = 78;

#[test]
fn a_port_already_in_use_exits_78_before_the_banner() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();

    let output = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .arg("serve")
        .env_clear()
        .env("TWOFOLD_ADDR", &address)
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "twofold: TWOFOLD_ADDR: cannot listen on {address}: "
        )),
        "{stderr}"
    );
    // Nothing else was started or announced: no embedded-mode banner, no `starting` line.
    assert!(!stderr.contains("EMBEDDED IN-MEMORY MODE"), "{stderr}");
    assert!(!stderr.contains("starting"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn the_mailer_runs_from_the_service_binary_with_its_own_settings() {
    let help = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .args(["mailer", "--help"])
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for flag in [
        "--nats-url",
        "--mail-key",
        "--mail-transport",
        "--mail-concurrency",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }

    // Without NATS_URL it refuses to start, as a configuration problem.
    let output = Command::new(env!("CARGO_BIN_EXE_twofold"))
        .arg("mailer")
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(stderr.contains("twofold: NATS_URL is required"), "{stderr}");
}

#[test]
fn the_default_key_file_of_keys_generate_is_ignored_by_git() {
    let command = Cli::command();
    let generate = command
        .find_subcommand("keys")
        .and_then(|keys| keys.find_subcommand("generate"))
        .unwrap();
    let default = generate
        .get_arguments()
        .find(|arg| arg.get_id() == "jwt_key_out")
        .and_then(|arg| arg.get_default_values().first())
        .map(|value| value.to_string_lossy().into_owned())
        .unwrap();
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    let ignored = Command::new("git")
        .args(["check-ignore", "--quiet", "--no-index", &default])
        .current_dir(&repository)
        .status()
        .unwrap();

    assert!(ignored.success(), "{default} is not in .gitignore");
}
