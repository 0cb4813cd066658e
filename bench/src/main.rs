//! `twofold-bench`: starts Twofold (embedded, and on Postgres + NATS with the mailer), drives it
//! over HTTP and measures each operation next to the limit it is held to, in the same run.
//! Writes `results.json`, `report.md` and SVG plots. See `bench/README.md`.

mod client;
mod cpu;
mod limits;
mod load;
mod report;
mod smtp;
mod stack;
mod suite;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use twofold_api::adapters::Argon2Params;

use crate::report::{Measure, Plot, Results, Series};
use crate::stack::{Mode, Servers, Stack};
use crate::suite::{Settings, StackRun};

/// Which stacks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// Embedded, then Postgres + NATS.
    All,
    Embedded,
    Postgres,
    /// Not a stack: the verify-only endpoint, started by the benchmark as a process of its
    /// own (`--key-file`).
    #[value(hide = true)]
    VerifyEndpoint,
}

/// A part of a stack's run, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Memory,
    Login,
    Overload,
    TestToken,
    Refresh,
    /// Postgres only.
    LoginTfa,
    /// Postgres only: test-token and refresh latency during a login flood.
    Flood,
    /// Postgres only: refresh latency against the user's history.
    History,
    /// Postgres only.
    Email,
    /// Postgres only.
    Rebuild,
}

#[derive(Parser)]
#[command(about = "Measures Twofold against its limits (see bench/README.md)")]
struct Args {
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Shorter runs and fewer levels: under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Seconds of each timed run (default 10, quick 2).
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrency levels of the login and test-token curves (default 1,4,16,64; quick 16,64).
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<usize>>,
    /// The Postgres server, without a database name.
    #[arg(
        long,
        env = "TWOFOLD_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_url: String,
    #[arg(
        long,
        env = "TWOFOLD_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// Where `twofold` and `twofold-mailer` are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Argon2id memory in KiB, of Twofold's hashes and the raw limit's alike (default: OWASP's
    /// minimum, Twofold's default).
    #[arg(long, default_value_t = Argon2Params::OWASP_MINIMUM.memory_kib)]
    argon2_memory_kib: u32,
    /// Argon2id passes, of Twofold's hashes and the raw limit's alike (default: OWASP's
    /// minimum, Twofold's default).
    #[arg(long, default_value_t = Argon2Params::OWASP_MINIMUM.iterations)]
    argon2_iterations: u32,
    /// Seconds the API keeps a user after a command on them (`TWOFOLD_RECENT_USERS_TTL`;
    /// default: the service's), to compare a build with itself. The history phase measures
    /// through a second instance that keeps none, whatever this says.
    #[arg(long)]
    recent_users_ttl: Option<u64>,
    /// Only these parts of each stack's run (after its sign-ups), to probe one change: the
    /// report then holds their lines alone.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// The JWT key of `verify-endpoint`.
    #[arg(long, hide = true)]
    key_file: Option<PathBuf>,
}

fn settings(args: &Args, hash_workers: usize) -> Settings {
    let quick = args.quick;
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if quick { 2.0 } else { 10.0 }));
    Settings {
        quick,
        duration,
        levels: args.levels.clone().unwrap_or_else(|| {
            if quick {
                vec![16, 64]
            } else {
                vec![1, 4, 16, 64]
            }
        }),
        overload: 384,
        refresh_concurrency: 16,
        tfa_logins: if quick { 500 } else { 2000 },
        histories: if quick {
            vec![10, 1000]
        } else {
            vec![10, 100, 1000]
        },
        history_samples: if quick { 30 } else { 200 },
        email_samples: if quick { 30 } else { 300 },
        ack_samples: if quick { 200 } else { 2000 },
        burst: 500,
        burst_concurrency: 64,
        accounts: if quick { 256 } else { 1024 },
        hash_workers,
        hash_queue: 256,
        recent_users_ttl: args.recent_users_ttl,
        argon2: Argon2Params {
            memory_kib: args.argon2_memory_kib,
            iterations: args.argon2_iterations,
            parallelism: Argon2Params::OWASP_MINIMUM.parallelism,
        },
    }
}

/// The folder of the `twofold` and `twofold-mailer` binaries: `--bin-dir`, or the
/// benchmark's own (`target/release`, where one `cargo build` puts all three).
fn bin_dir(args: &Args) -> anyhow::Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .context("the benchmark's own folder")?,
    };
    for binary in ["twofold", "twofold-mailer"] {
        if !dir.join(binary).is_file() {
            bail!(
                "{} is missing: build it with the benchmark, \
                 `cargo build --release --locked -p twofold-api -p twofold-mailer -p twofold-bench`",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

fn shell(command: &str, args: &[&str]) -> String {
    Command::new(command)
        .args(args)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} cores ({cpu}), {}, {}; load average at start {}; Postgres and NATS on the same machine",
        std::thread::available_parallelism().map_or(0, usize::from),
        memory.split_whitespace().collect::<Vec<_>>().join(" "),
        shell("uname", &["-sr"]),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

async fn run_stack(
    mode: Mode,
    servers: &Servers,
    settings: &Settings,
    only: &[Phase],
    measures: &mut Vec<Measure>,
    notes: &mut Vec<String>,
    plots: &mut Vec<(Mode, suite::Curves)>,
) -> anyhow::Result<()> {
    eprintln!("== {} ==", mode.name());
    let (smtp_port, received) = smtp::start().await?;
    let stack = Stack::start(
        mode,
        servers,
        settings.argon2,
        smtp_port,
        settings.recent_users_ttl,
    )
    .await?;
    // Let the relay and the mailer's consumer settle before the first reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = stack.rss();
    let outcome = async {
        let mut run = StackRun::new(&stack, settings, received, &servers.nats_url)?;
        eprintln!("signing up {} accounts…", settings.accounts);
        run.sign_up_accounts().await?;
        let runs = |phase| only.is_empty() || only.contains(&phase);
        if runs(Phase::Memory) {
            eprintln!("memory…");
            run.memory(fresh).await?;
        }
        if runs(Phase::Login) {
            eprintln!("login…");
            run.login_curve().await?;
        }
        if runs(Phase::Overload) {
            eprintln!("overload…");
            run.overload().await?;
        }
        if runs(Phase::TestToken) {
            eprintln!("test-token…");
            run.test_token_curve().await?;
        }
        if runs(Phase::Refresh) {
            eprintln!("refresh…");
            run.refresh_rate().await?;
        }
        if mode == Mode::Postgres {
            if runs(Phase::LoginTfa) {
                eprintln!("login_tfa…");
                run.login_tfa_rate().await?;
            }
            if runs(Phase::Flood) {
                eprintln!("latency during a login flood…");
                run.latency_under_login_load().await?;
            }
            if runs(Phase::History) {
                eprintln!("history…");
                run.history().await?;
            }
            if runs(Phase::Email) {
                eprintln!("email…");
                run.email().await?;
            }
            if runs(Phase::Rebuild) {
                eprintln!("rebuild…");
                run.rebuild().await?;
            }
        }
        Ok::<_, anyhow::Error>((run.measures, run.notes, run.curves))
    }
    .await;
    stack.remove().await;
    let (mut stack_measures, mut stack_notes, curves) = outcome?;
    measures.append(&mut stack_measures);
    notes.append(&mut stack_notes);
    plots.push((mode, curves));
    Ok(())
}

fn plots(curves: &[(Mode, suite::Curves)]) -> Vec<Plot> {
    let mut login = Vec::new();
    let mut test_token = Vec::new();
    let mut history = Vec::new();
    let mut email = Vec::new();
    for (mode, curve) in curves {
        let name = mode.name();
        let renamed = |series: &Series, label: String| Series {
            name: label,
            points: series.points.clone(),
        };
        login.push(curve.login.clone());
        login.push(renamed(
            &curve.argon2,
            format!("raw Argon2id, same pool ({name} run)"),
        ));
        test_token.push(curve.test_token.clone());
        test_token.push(renamed(
            &curve.verify,
            format!("verify-only endpoint ({name} run)"),
        ));
        if !curve.history_p50.points.is_empty() {
            history.push(renamed(&curve.history_p50, format!("refresh p50 ({name})")));
            history.push(renamed(&curve.history_p99, format!("refresh p99 ({name})")));
        }
        if !curve.email_ms.is_empty() {
            let mut sorted = curve.email_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            email.push(Series {
                name: format!("sign-up → email handed to SMTP ({name})"),
                points: sorted
                    .iter()
                    .enumerate()
                    .map(|(index, ms)| (*ms, (index + 1) as f64 / n))
                    .collect(),
            });
        }
    }
    let mut plots = vec![
        Plot {
            file: "login-throughput.svg".to_owned(),
            title: "Login throughput vs concurrency".to_owned(),
            x_label: "connections".to_owned(),
            y_label: "per second".to_owned(),
            log_x: true,
            series: login,
        },
        Plot {
            file: "test-token-throughput.svg".to_owned(),
            title: "test-token throughput vs concurrency".to_owned(),
            x_label: "connections".to_owned(),
            y_label: "requests per second".to_owned(),
            log_x: true,
            series: test_token,
        },
    ];
    if !history.is_empty() {
        plots.push(Plot {
            file: "refresh-latency-vs-history.svg".to_owned(),
            title: "Refresh latency vs the user's history".to_owned(),
            x_label: "events in the user's stream".to_owned(),
            y_label: "ms".to_owned(),
            log_x: true,
            series: history,
        });
    }
    if !email.is_empty() {
        plots.push(Plot {
            file: "email-latency.svg".to_owned(),
            title: "Sign-up → email latency (cumulative distribution)".to_owned(),
            x_label: "ms".to_owned(),
            y_label: "fraction of sign-ups".to_owned(),
            log_x: false,
            series: email,
        });
    }
    plots
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hash_workers = std::thread::available_parallelism().map_or(1, usize::from);
    if args.which == Which::VerifyEndpoint {
        let key_file = args
            .key_file
            .as_deref()
            .context("verify-endpoint needs --key-file")?;
        return limits::serve_verify_endpoint(key_file, hash_workers).await;
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let bin_dir = bin_dir(&args)?;
    let servers = Servers {
        database_url: args.database_url.clone(),
        nats_url: args.nats_url.clone(),
        bin_dir,
    };
    let settings = settings(&args, hash_workers);
    let machine = machine();
    eprintln!("{machine}");
    let (mut measures, mut notes, mut curves) = (Vec::new(), Vec::new(), Vec::new());
    let modes: &[Mode] = match args.which {
        Which::All => &[Mode::Embedded, Mode::Postgres],
        Which::Embedded => &[Mode::Embedded],
        Which::Postgres => &[Mode::Postgres],
        Which::VerifyEndpoint => &[],
    };
    if !args.only.is_empty() {
        notes.push(format!("only these parts ran: {:?}", args.only));
    }
    for &mode in modes {
        run_stack(
            mode,
            &servers,
            &settings,
            &args.only,
            &mut measures,
            &mut notes,
            &mut curves,
        )
        .await?;
    }
    notes.push(format!(
        "the machine is shared and noisy: every ratio compares two measures taken next to each \
         other in this run; absolute rates move between runs. Load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let plots = plots(&curves);
    let results = Results {
        started_unix: started,
        quick: args.quick,
        commit: shell("git", &["rev-parse", "--short=12", "HEAD"]),
        machine,
        settings: serde_json::to_value(&settings)?,
        measures,
        plots,
        notes,
    };
    std::fs::create_dir_all(&args.out)?;
    for plot in &results.plots {
        report::draw(plot, &args.out)?;
    }
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    let markdown = report::markdown(&results);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    eprintln!("wrote {}", args.out.join("report.md").display());
    let failed = results
        .measures
        .iter()
        .filter(|m| m.pass == Some(false))
        .count();
    eprintln!("{} measures, {failed} below target", results.measures.len());
    Ok(())
}
