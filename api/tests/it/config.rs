//! Configuration as an operator meets it: the real `twofold` binary started with bad settings
//! (every problem reported at once, one line each, no secret repeated), the TOML file and its
//! precedence, and the README's configuration tables checked against clap's arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use twofold_api::adapters::SealingKey;
use twofold_api::http::jwt::JwtKey;
use twofold_api::Cli;
use twofold_tests::scratch::ScratchDir;

/// The status of a configuration problem (sysexits.h `EX_CONFIG`).
const EX_CONFIG: i32 = 78;
/// The status of a command-line (or configuration file) usage error, as clap exits.
const USAGE: i32 = 2;

/// A fresh folder (for keys and files), removed when the test ends.
fn work_dir() -> ScratchDir {
    ScratchDir::new("config").unwrap()
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn postgres_server() -> String {
    std::env::var("TWOFOLD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs `twofold` with only the variables given (none inherited from the test's environment).
fn twofold(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twofold"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_problem_is_reported_at_once_on_its_own_line_without_secrets() {
    let short_sealing_key = "c2hvcnQta2V5LXh5eg=="; // base64 of 13 bytes
    let short_hs256 = "hs256-too-short-q7";
    let retired = "bm90LTMyLWJ5dGVzLXJldGlyZWQ="; // base64 of 20 bytes
    let output = twofold(
        &["serve"],
        &[
            (
                "DATABASE_URL",
                "postgres://postgres:pg-pass-9z@127.0.0.1:1/twofold",
            ),
            ("TWOFOLD_JWT_KEY_FILE", "/nonexistent/twofold-jwt.pem"),
            ("TWOFOLD_SEALING_KEY", short_sealing_key),
            ("TWOFOLD_SEALING_RETIRED_KEYS", retired),
            ("TWOFOLD_JWT_HS256_SECRET", short_hs256),
            ("TWOFOLD_ACCESS_TOKEN_TTL", "0"),
            ("TWOFOLD_PRE_2FA_TOKEN_TTL", "0"),
            ("TWOFOLD_CORS_ORIGINS", "*"),
            ("TWOFOLD_REQUEST_TIMEOUT", "10"),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    for expected in [
        "twofold: TWOFOLD_JWT_KEY_FILE: /nonexistent/twofold-jwt.pem cannot be read",
        "twofold: TWOFOLD_SEALING_KEY must decode to 32 bytes, not 13",
        "twofold: TWOFOLD_SEALING_RETIRED_KEYS must decode to 32 bytes, not 20 (key 1 of the list)",
        "twofold: TWOFOLD_JWT_HS256_SECRET must have at least 32 bytes",
        "twofold: TWOFOLD_ACCESS_TOKEN_TTL must be at least 1 second",
        "twofold: TWOFOLD_PRE_2FA_TOKEN_TTL must be at least 1 second",
        "twofold: TWOFOLD_CORS_ORIGINS: `*` is not an origin",
        "twofold: TWOFOLD_REQUEST_TIMEOUT (10 s) must exceed TWOFOLD_BODY_READ_TIMEOUT (10 s)",
        "twofold: with DATABASE_URL set, NATS_URL must be set too",
        "twofold: DATABASE_URL: cannot connect to Postgres at 127.0.0.1:1/twofold: ",
    ] {
        assert_eq!(
            lines
                .iter()
                .filter(|line| line.starts_with(expected))
                .count(),
            1,
            "expected one line starting with {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), 10, "one line per problem:\n{stderr}");
    for secret in [short_sealing_key, short_hs256, retired, "pg-pass-9z"] {
        assert!(!stderr.contains(secret), "{secret} leaked:\n{stderr}");
        assert!(!text(&output.stdout).contains(secret));
    }
}

#[test]
fn production_refuses_the_embedded_store_and_ephemeral_keys() {
    let output = twofold(&["serve"], &[("TWOFOLD_ENV", "production")]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("twofold: TWOFOLD_ENV=production refuses ephemeral keys"),
        "{stderr}"
    );
    assert!(
        stderr.contains("twofold: TWOFOLD_ENV=production refuses the embedded in-memory store"),
        "{stderr}"
    );
    // The same settings outside production start the embedded mode: `check` accepts them.
    let development = twofold(&["check"], &[]);
    assert!(
        development.status.success(),
        "{}",
        text(&development.stderr)
    );
}

#[test]
fn a_database_url_that_is_not_postgres_is_named_without_connecting() {
    let output = twofold(
        &["check"],
        &[
            ("DATABASE_URL", "mysql://root:db-pass-4k@127.0.0.1:3306/x"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("TWOFOLD_ENV", "production"),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("twofold: DATABASE_URL must start with postgres:// or postgresql://"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot connect"), "{stderr}");
    assert!(!stderr.contains("db-pass-4k"), "{stderr}");
}

#[test]
fn the_example_file_loads_and_the_environment_overrides_it() {
    let dir = work_dir();
    let jwt_key = dir.join("jwt.pem");
    std::fs::write(&jwt_key, JwtKey::generate_pem().unwrap().as_bytes()).unwrap();
    let sealing_key = SealingKey::generate().to_base64();
    let example = repo_file("twofold.example.toml");
    let output = twofold(
        &["--config", example.to_str().unwrap(), "check"],
        &[
            ("DATABASE_URL", &format!("{}/postgres", postgres_server())),
            ("TWOFOLD_JWT_KEY_FILE", jwt_key.to_str().unwrap()),
            ("TWOFOLD_SEALING_KEY", &sealing_key),
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for expected in [
        "env: Production,",
        "addr: 0.0.0.0:5555,",
        "log_format: Json,",
        "ip_rate_limit: 120,",
        &format!("key_file: Some(\n            {:?},", jwt_key),
        "configuration ok",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(&sealing_key), "{stdout}");
}

#[test]
fn the_example_file_shows_every_setting() {
    let example = std::fs::read_to_string(repo_file("twofold.example.toml")).unwrap();
    for long in Cli::command()
        .get_arguments()
        .filter(|arg| !["config_file", "help", "version"].contains(&arg.get_id().as_str()))
        .filter_map(clap::Arg::get_long)
    {
        assert!(
            example.contains(&format!("\n{long} = ")) || example.contains(&format!("# {long} = ")),
            "twofold.example.toml does not show `{long}`"
        );
    }
}

#[test]
fn a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() {
    let dir = work_dir();
    let file = dir.join("twofold.toml");
    std::fs::write(
        &file,
        "addr = \"127.0.0.1:7001\"\n\
         jwt-issuer = \"from-file\"\n\
         jwt-audience = \"from-file\"\n\
         totp-issuer = \"from-file\"\n\
         cors-origins = \"https://file.example\"\n\
         jwt-retired-key-files = []\n",
    )
    .unwrap();
    let output = twofold(
        &[
            "--config",
            file.to_str().unwrap(),
            "--jwt-audience",
            "from-flag",
            "--cors-origins",
            "https://flag.example",
            "check",
        ],
        &[
            ("TWOFOLD_JWT_ISSUER", "from-env"),
            ("TWOFOLD_JWT_AUDIENCE", "from-env"),
            ("TWOFOLD_CORS_ORIGINS", "https://env.example"),
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for expected in [
        "addr: 127.0.0.1:7001,",
        "issuer: \"from-env\",",
        "audience: \"from-flag\",",
        "totp_issuer: \"from-file\",",
        "cors_origins: \"https://flag.example\",",
        "backup_codes: 5,",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

#[test]
fn the_file_may_come_from_twofold_config_and_holds_lists() {
    let dir = work_dir();
    let keys: Vec<PathBuf> = (0..2).map(|n| dir.join(format!("old-{n}.pem"))).collect();
    for key in &keys {
        std::fs::write(key, JwtKey::generate_pem().unwrap().as_bytes()).unwrap();
    }
    let file = dir.join("twofold.toml");
    std::fs::write(
        &file,
        format!(
            "jwt-key-file = {:?}\nsealing-key = {:?}\njwt-retired-key-files = [{:?}, {:?}]\n\
             access-token-ttl = 60\n",
            keys[0],
            SealingKey::generate().to_base64(),
            keys[0],
            keys[1]
        ),
    )
    .unwrap();
    let output = twofold(&["check"], &[("TWOFOLD_CONFIG", file.to_str().unwrap())]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(stdout.contains("access_token_ttl: 60,"), "{stdout}");
    assert!(stdout.contains(&format!("{:?}", keys[1])), "{stdout}");
    assert!(
        stdout.contains("key: Some(\n            SecretBox<str>([REDACTED]),"),
        "{stdout}"
    );
}

#[test]
fn unknown_keys_and_wrong_shapes_in_the_file_are_refused_by_name() {
    let dir = work_dir();
    let file = dir.join("twofold.toml");
    std::fs::write(
        &file,
        "databse-url = \"postgres://x\"\n\
         access_token_ttl = 60\n\
         refresh-token-ttl = [1, 2]\n\
         addr = { host = \"x\" }\n",
    )
    .unwrap();
    let output = twofold(&["--config", file.to_str().unwrap(), "check"], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(USAGE), "{stderr}");
    for expected in [
        "unknown key `databse-url`",
        "unknown key `access_token_ttl` (did you mean `access-token-ttl`?)",
        "`refresh-token-ttl` takes one value, not a list",
        "`addr` must be a string, a number, a boolean",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
}

#[test]
fn a_missing_or_broken_file_is_named_without_its_contents() {
    let dir = work_dir();
    let missing = dir.join("missing.toml");
    let output = twofold(&["--config", missing.to_str().unwrap(), "check"], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(USAGE), "{stderr}");
    assert!(stderr.contains("missing.toml cannot be read"), "{stderr}");

    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        "addr = \"127.0.0.1:1\"\nsealing-key = unquoted-secret-77\n",
    )
    .unwrap();
    let output = twofold(&["--config", broken.to_str().unwrap(), "check"], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(USAGE), "{stderr}");
    assert!(stderr.contains("line 2: not valid TOML"), "{stderr}");
    assert!(!stderr.contains("unquoted-secret-77"), "{stderr}");
}

/// The rows of the Markdown table under `heading`: first, second and third cells.
fn table_rows(readme: &str, heading: &str) -> Vec<[String; 3]> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    readme[start + heading.len()..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect();
            [cells[0].clone(), cells[1].clone(), cells[2].clone()]
        })
        .collect()
}

/// Compares a README table (variable, flag, default) with a clap command's arguments.
fn assert_table_matches(readme: &str, heading: &str, command: &clap::Command, extra: &[&str]) {
    let rows = table_rows(readme, heading);
    let mut documented: Vec<String> = Vec::new();
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let env = env.to_string_lossy().into_owned();
        let row = rows
            .iter()
            .find(|row| row[0] == format!("`{env}`"))
            .unwrap_or_else(|| panic!("{heading}: no row for `{env}`"));
        assert_eq!(row[1], format!("`--{long}`"), "{heading}: flag of {env}");
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        let default = defaults.join(",");
        if default.is_empty() {
            assert!(
                row[2].starts_with('—'),
                "{heading}: {env} has no default, the README says {}",
                row[2]
            );
        } else {
            assert_eq!(
                row[2],
                format!("`{default}`"),
                "{heading}: default of {env}"
            );
        }
        documented.push(format!("`{env}`"));
    }
    for row in &rows {
        assert!(
            documented.contains(&row[0]) || extra.contains(&row[0].as_str()),
            "{heading}: the README documents {}, which the binary does not take",
            row[0]
        );
    }
}

#[test]
fn the_readme_configuration_tables_match_the_binaries() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    assert_table_matches(
        &readme,
        "### Settings of `twofold`",
        &Cli::command(),
        &["`RUST_LOG`"],
    );
    assert_table_matches(
        &readme,
        "### Settings of `twofold-mailer`",
        &twofold_mailer::MailerArgs::command(),
        &["`RUST_LOG`"],
    );
}
