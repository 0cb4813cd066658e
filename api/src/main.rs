//! The `twofold` binary: `serve` (the default), `migrate`, `check`, `users grant-admin|erase`,
//! `keys generate|reseal|mail-key`, `audit verify|history|export`, `views rebuild`, `mailer`. A
//! configuration problem exits with status 78 (`EX_CONFIG`), one line each.

use std::io::Write;
use std::process::ExitCode;

use secrecy::ExposeSecret;

use twofold_api::app::admin::GrantOutcome;
use twofold_api::config::{
    AuditCommand, Command, ConfigProblems, KeysCommand, UsersCommand, ViewsCommand,
};
use twofold_api::http::jwt::JwtKey;
use twofold_api::operator;
use twofold_api::{adapters, startup, telemetry, Application, Cli, Config};
use twofold_projections::chain::{Head, Tampering};
use twofold_projections::log::Checkpoint;
use twofold_projections::AuditedEvent;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::load().unwrap_or_else(|error| error.exit());
    telemetry::init(cli.config.log_format);
    let result = match cli.command {
        None | Some(Command::Serve) => serve(cli.config).await,
        Some(Command::Migrate) => migrate(&cli.config).await,
        Some(Command::Check) => check(&cli.config).await,
        Some(Command::Users {
            action: UsersCommand::GrantAdmin { email },
        }) => grant_admin(&cli.config, &email).await,
        Some(Command::Users {
            action: UsersCommand::Erase { user, reason },
        }) => erase_user(&cli.config, &user, reason.as_deref()).await,
        Some(Command::Keys {
            action: KeysCommand::Generate { jwt_key_out },
        }) => generate_keys(&jwt_key_out),
        Some(Command::Keys {
            action: KeysCommand::Reseal,
        }) => reseal(&cli.config).await,
        Some(Command::Audit {
            action: AuditCommand::Verify { head_out, head_in },
        }) => audit_verify(&cli.config, head_out.as_deref(), head_in.as_deref()).await,
        Some(Command::Audit {
            action: AuditCommand::History { user, as_of, json },
        }) => audit_history(&cli.config, &user, as_of, json).await,
        Some(Command::Audit {
            action: AuditCommand::Export { after, until },
        }) => audit_export(&cli.config, after.as_deref(), until).await,
        Some(Command::Views {
            action: ViewsCommand::Rebuild { apply },
        }) => rebuild_views(&cli.config, apply).await,
        Some(Command::Keys {
            action: KeysCommand::MailKey,
        }) => mail_key(&cli.config),
        Some(Command::Mailer(args)) => mailer(&cli.config, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// Prints `error` for the operator: each configuration problem on its own line.
fn report(error: &anyhow::Error) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    match error.downcast_ref::<ConfigProblems>() {
        Some(problems) => {
            for problem in &problems.0 {
                let _ = writeln!(stderr, "twofold: {problem}");
            }
            ExitCode::from(EX_CONFIG)
        }
        None => {
            let _ = writeln!(stderr, "twofold: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status of a configuration error (sysexits.h), which a supervisor should not retry.
const EX_CONFIG: u8 = 78;

async fn serve(config: Config) -> anyhow::Result<()> {
    Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}

/// `twofold mailer`: what `twofold-mailer` does, from this binary, so that running the service
/// and the mailer from source takes one build.
/// The mailer holds the mail key only: it refuses to run where the sealing key is configured.
async fn mailer(config: &Config, args: twofold_mailer::MailerArgs) -> anyhow::Result<()> {
    twofold_mailer::refuse_root_keys(
        config.sealing.key.is_some(),
        !config.sealing.retired_keys.is_empty(),
    )
    .map_err(|error| ConfigProblems(vec![error.to_string()]))?;
    if let Some(address) = args.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(address)
            .install()
            .map_err(|error| {
                ConfigProblems(vec![format!(
                    "TWOFOLD_MAILER_METRICS_ADDR: cannot serve metrics on {address}: {error}"
                )])
            })?;
        tracing::info!(%address, "serving metrics");
    }
    let settings = args
        .into_settings()
        .map_err(|error| ConfigProblems(vec![error.to_string()]))?;
    tracing::info!(?settings, "starting the mailer");
    twofold_mailer::run(settings, startup::shutdown_signal()).await?;
    Ok(())
}

async fn check(config: &Config) -> anyhow::Result<()> {
    startup::validate(config).await?;
    say(&format!("{config:#?}"))?;
    say("configuration ok")
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config
        .database
        .url
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("migrate needs DATABASE_URL"))?;
    startup::connect(url.expose_secret(), 1).await?;
    say("migrations applied")
}

async fn grant_admin(config: &Config, email: &str) -> anyhow::Result<()> {
    match operator::grant_admin(config, email).await? {
        GrantOutcome::Granted => say(&format!("{email} is now an admin")),
        GrantOutcome::AlreadyAdmin => say(&format!("{email} is already an admin")),
    }
}

async fn erase_user(config: &Config, who: &str, reason: Option<&str>) -> anyhow::Result<()> {
    let user_id = operator::erase_user(config, who, reason).await?;
    say(&format!("user {user_id} is erased"))
}

async fn reseal(config: &Config) -> anyhow::Result<()> {
    let report = operator::reseal(config).await?;
    say(&format!(
        "{} users checked, {} TOTP seeds, {} data keys and {} address reservations moved to the \
         current key",
        report.users, report.resealed, report.data_keys_resealed, report.addresses_reindexed
    ))?;
    if report.retired_keys_in_use.is_empty() {
        return say("no user holds a secret under a retired key: they can be removed");
    }
    for (key_id, users) in &report.retired_keys_in_use {
        say(&format!(
            "retired key {key_id} still keys the backup codes or pending codes of {users} users: \
             keep it configured until they regenerate their backup codes"
        ))?;
    }
    Ok(())
}

async fn rebuild_views(config: &Config, apply: bool) -> anyhow::Result<()> {
    let report = operator::rebuild_views(config, apply).await?;
    for difference in &report.differences {
        say(&difference.to_string())?;
    }
    say(&format!(
        "replayed {} events of {} users in {:.3} s: {:.0} events/s ({} events committed meanwhile \
         applied after)",
        report.events,
        report.users,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        report.caught_up,
    ))?;
    let differences = match report.differences.len() {
        1 => "1 difference".to_owned(),
        count => format!("{count} differences"),
    };
    match (report.differences.is_empty(), report.applied) {
        (true, true) => say("the views matched the log; the rebuilt views are in place"),
        (false, true) => say(&format!("{differences}; the rebuilt views are in place")),
        (true, false) => say("the views match the log"),
        (false, false) => Err(anyhow::anyhow!(
            "{differences} between the views and the log; \
             `twofold views rebuild --apply` replaces the views with the rebuilt ones"
        )),
    }
}

async fn audit_verify(
    config: &Config,
    head_out: Option<&std::path::Path>,
    head_in: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let saved: Option<Head> = match head_in {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|error| anyhow::anyhow!("{}: not a head: {error}", path.display()))?,
            )
        }
        None => None,
    };
    let verification = operator::audit_verify(config, saved.as_ref()).await?;
    for finding in &verification.findings {
        say(&format!(
            "user {} sequence {}: {}",
            finding.aggregate_id,
            finding.sequence,
            describe(&finding.problem)
        ))?;
    }
    let seconds = verification.elapsed.as_secs_f64();
    say(&format!(
        "checked {} events of {} users in {seconds:.3} s ({:.0} events/s)",
        verification.events,
        verification.users,
        verification.events as f64 / seconds.max(f64::EPSILON),
    ))?;
    if let Some(path) = head_out {
        let head = serde_json::to_string_pretty(&verification.head)?;
        std::fs::write(path, head)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        say(&format!("head written to {}", path.display()))?;
    }
    match verification.findings.len() {
        0 => say("no tampering found"),
        found => anyhow::bail!("{found} problems found in the event log"),
    }
}

async fn audit_history(
    config: &Config,
    user: &str,
    as_of: Option<time::OffsetDateTime>,
    json: bool,
) -> anyhow::Result<()> {
    let events = operator::audit_history(config, user, as_of).await?;
    for event in &events {
        if json {
            say(&serde_json::to_string(event)?)?;
        } else {
            say(&timeline_line(event))?;
        }
    }
    Ok(())
}

/// One event of a timeline: when, which, its facts, who and from where.
fn timeline_line(event: &AuditedEvent) -> String {
    let time = event
        .recorded_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let facts: Vec<String> = event
        .payload
        .as_object()
        .and_then(|tagged| tagged.values().next())
        .and_then(serde_json::Value::as_object)
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, _)| name.as_str() != "at")
                .map(|(name, value)| match value {
                    serde_json::Value::String(text) => format!("{name}={text}"),
                    other => format!("{name}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let metadata = &event.metadata;
    let mut line = format!(
        "{time}  #{:<4} {:<24} by {}",
        event.sequence, event.event_type, metadata.actor
    );
    if let Some(ip) = &metadata.ip {
        line.push_str(&format!(" from {ip}"));
    }
    if let Some(agent) = &metadata.user_agent {
        line.push_str(&format!(" ({agent})"));
    }
    if let Some(request) = &metadata.request_id {
        line.push_str(&format!(" request {request}"));
    }
    if !facts.is_empty() {
        line.push_str(&format!("\n      {}", facts.join(" ")));
    }
    line
}

async fn audit_export(
    config: &Config,
    after: Option<&str>,
    until: Option<time::OffsetDateTime>,
) -> anyhow::Result<()> {
    let after = match after {
        Some(position) => position.parse::<Checkpoint>()?,
        None => Checkpoint::ORIGIN,
    };
    let mut stdout = std::io::stdout().lock();
    let mut last = None;
    // A reader that stops early (`| head`) closes the pipe: the export stops there, quietly.
    let mut closed = false;
    let exported = operator::audit_export(config, after, until, |event| {
        let line = serde_json::to_string(&event)
            .map_err(|error| twofold_api::app::AppError::Internal(Box::new(error)))?;
        writeln!(stdout, "{line}").map_err(|error| {
            closed = error.kind() == std::io::ErrorKind::BrokenPipe;
            twofold_api::app::AppError::Internal(Box::new(error))
        })?;
        last = Some(event.position);
        Ok(())
    })
    .await;
    let exported = match exported {
        Err(_) if closed => return Ok(()),
        other => other?,
    };
    let resume = last.map_or_else(String::new, |position| {
        format!("; resume with --after {position}")
    });
    tracing::info!("exported {exported} events{resume}");
    Ok(())
}

/// What a finding means, for the operator.
fn describe(problem: &Tampering) -> String {
    match problem {
        Tampering::Edited => {
            "edited or inserted: its content is not what was written there".to_owned()
        }
        Tampering::DigestEdited => "its digests were edited (its content is intact)".to_owned(),
        Tampering::Deleted => "deleted: later events exist".to_owned(),
        Tampering::Reordered { written_at } => format!("moved here from sequence {written_at}"),
        Tampering::Unchained => "has no digest: written behind the service's back".to_owned(),
        Tampering::UnknownKey { key_id } => {
            format!("chained with key {key_id}, which is not configured: cannot be checked")
        }
        Tampering::Truncated { head_sequence } => format!(
            "the saved head ends at sequence {head_sequence}; the newest events were removed"
        ),
        Tampering::HeadMismatch => "is not the event the saved head recorded".to_owned(),
    }
}

fn generate_keys(jwt_key_out: &std::path::Path) -> anyhow::Result<()> {
    let pem = JwtKey::generate_pem().map_err(anyhow::Error::msg)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(jwt_key_out)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .map_err(|error| anyhow::anyhow!("{}: {error}", jwt_key_out.display()))?;
    let sealing = adapters::SealingKey::generate();
    say(&format!(
        "export TWOFOLD_JWT_KEY_FILE={}\nexport TWOFOLD_SEALING_KEY={}",
        jwt_key_out.display(),
        sealing.to_base64()
    ))
}

/// Prints the mail keys of the configured sealing keys, for the mailer's environment: it
/// needs them, and must not hold the sealing keys themselves.
fn mail_key(config: &Config) -> anyhow::Result<()> {
    use adapters::SealingKey;
    let Some(current) = &config.sealing.key else {
        anyhow::bail!(
            "keys mail-key needs TWOFOLD_SEALING_KEY: the mail key is derived from the sealing \
             key the API runs with"
        );
    };
    let current = SealingKey::from_base64(current.expose_secret()).map_err(anyhow::Error::msg)?;
    let retired = config
        .sealing
        .retired_keys
        .iter()
        .map(|key| {
            SealingKey::from_base64(key.expose_secret()).map_err(|error| {
                anyhow::anyhow!(
                    "{}",
                    error.replace("TWOFOLD_SEALING_KEY", "TWOFOLD_SEALING_RETIRED_KEYS")
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    say(&format!(
        "export TWOFOLD_MAIL_KEY={}",
        current.mail_key().to_base64().as_str()
    ))?;
    if !retired.is_empty() {
        let retired: Vec<_> = retired
            .iter()
            .map(|key| key.mail_key().to_base64())
            .collect();
        let retired: Vec<&str> = retired.iter().map(|key| key.as_str()).collect();
        say(&format!(
            "export TWOFOLD_MAIL_RETIRED_KEYS={}",
            retired.join(",")
        ))?;
    }
    Ok(())
}

/// Prints a result line for the operator on standard output.
fn say(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}
