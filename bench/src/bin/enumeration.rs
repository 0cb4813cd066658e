//! The user-enumeration benchmark: do login, sign-up and forgot-password tell a known email
//! from an unknown one by status, body or time?
//!
//! It starts the service in-process on a fresh Postgres database and a unique NATS prefix,
//! with production Argon2 parameters and the concealed sign-up answer, then sends the two
//! cases of each pair interleaved in a seeded random order over one keep-alive client, and
//! reports medians and whether the answers were identical. See `bench/README.md`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use twofold_api::adapters::Argon2Params;
use twofold_api::config::ExistingEmail;
use twofold_api::{Application, Config};
use uuid::Uuid;

/// The password of every account the benchmark signs up.
const PASSWORD: &str = "correct horse battery staple";

/// The password of every timed login: wrong for the known accounts, so no token is issued
/// and the two cases take the same path up to the password check.
const WRONG_PASSWORD: &str = "incorrect horse battery staple";

/// Command-line flags.
#[derive(Parser)]
#[command(about = "Times known against unknown emails on login, sign-up and forgot-password")]
struct Args {
    /// Timed samples per case (each pair sends twice this many requests).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Untimed rounds sent first, with their own accounts.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// The Postgres server, without a database name; a fresh database is created on it and
    /// dropped at the end.
    #[arg(
        long,
        env = "TWOFOLD_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_url: String,
    /// The NATS server with JetStream; the benchmark's streams get a unique prefix and are
    /// deleted at the end.
    #[arg(
        long,
        env = "TWOFOLD_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// Seed of the order in which the cases of a round are sent.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The largest accepted distance of the ratio of medians from 1 (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    tolerance: f64,
    /// Also runs the mailer in-process (file transport), to see whether delivering the
    /// known cases' emails on the same cores moves the numbers.
    #[arg(long)]
    mailer: bool,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The endpoints that take an email from anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Endpoint {
    /// `POST /auth/login` with a wrong password.
    Login,
    /// `POST /auth/forgot-password`.
    ForgotPassword,
    /// `POST /auth/signup` without 2FA.
    Signup,
}

impl Endpoint {
    const ALL: [Self; 3] = [Self::Login, Self::ForgotPassword, Self::Signup];

    fn path(self) -> &'static str {
        match self {
            Self::Login => "/api/v1/auth/login",
            Self::ForgotPassword => "/api/v1/auth/forgot-password",
            Self::Signup => "/api/v1/auth/signup",
        }
    }

    fn request(self, client: &reqwest::Client, base: &str, email: &str) -> reqwest::RequestBuilder {
        let url = format!("{base}{}", self.path());
        match self {
            Self::Login => client
                .post(url)
                .form(&[("username", email), ("password", WRONG_PASSWORD)]),
            Self::ForgotPassword => client.post(url).json(&json!({ "email": email })),
            Self::Signup => client.post(url).json(&signup_body(email)),
        }
    }
}

/// A sign-up without 2FA.
fn signup_body(email: &str) -> serde_json::Value {
    json!({
        "email": email,
        "full_name": "Ada Lovelace",
        "password": PASSWORD,
        "tfa_enabled": false,
        "device": null,
    })
}

/// A fresh address; known and unknown addresses have the same length.
fn fresh_email() -> String {
    format!("bench-{}@example.com", Uuid::new_v4().simple())
}

/// What the service answered, compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Answer {
    status: u16,
    body: String,
}

/// The timings and answers of one case.
#[derive(Default)]
struct Case {
    millis: Vec<f64>,
    answers: BTreeMap<Answer, usize>,
}

/// Summary statistics of one case, in milliseconds.
#[derive(Serialize)]
struct CaseReport {
    n: usize,
    median_ms: f64,
    p10_ms: f64,
    p90_ms: f64,
    answers: Vec<AnswerCount>,
}

/// One distinct answer and how often it came.
#[derive(Serialize)]
struct AnswerCount {
    #[serde(flatten)]
    answer: Answer,
    count: usize,
}

/// The result of one pair.
#[derive(Serialize)]
struct PairReport {
    endpoint: Endpoint,
    known: CaseReport,
    unknown: CaseReport,
    /// Median of the known case over the median of the unknown one.
    ratio: f64,
    timing_pass: bool,
    /// Both cases always gave one and the same status and body.
    answers_identical: bool,
}

/// Everything one run measured.
#[derive(Serialize)]
struct Report {
    unix_time: u64,
    samples: usize,
    warmup: usize,
    seed: u64,
    tolerance: f64,
    mailer: bool,
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    pairs: Vec<PairReport>,
}

/// The `q` quantile of sorted values, interpolating linearly between ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let rank = q * last as f64;
    let low = rank.floor() as usize;
    let high = (low + 1).min(last);
    let fraction = rank - low as f64;
    match (sorted.get(low), sorted.get(high)) {
        (Some(a), Some(b)) => a + (b - a) * fraction,
        _ => f64::NAN,
    }
}

impl Case {
    fn record(&mut self, elapsed: Duration, answer: Answer) {
        self.millis.push(elapsed.as_secs_f64() * 1000.0);
        *self.answers.entry(answer).or_default() += 1;
    }

    fn report(&self) -> CaseReport {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        CaseReport {
            n: sorted.len(),
            median_ms: quantile(&sorted, 0.5),
            p10_ms: quantile(&sorted, 0.1),
            p90_ms: quantile(&sorted, 0.9),
            answers: self
                .answers
                .iter()
                .map(|(answer, count)| AnswerCount {
                    answer: answer.clone(),
                    count: *count,
                })
                .collect(),
        }
    }
}

/// Sends one request and times it from the first byte sent to the last byte of the body.
async fn timed(
    client: &reqwest::Client,
    base: &str,
    endpoint: Endpoint,
    email: &str,
) -> anyhow::Result<(Duration, Answer)> {
    let request = endpoint.request(client, base, email);
    let start = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let elapsed = start.elapsed();
    Ok((
        elapsed,
        Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    ))
}

/// Signs up `count` accounts for each endpoint, so that no account is used twice.
async fn sign_up_accounts(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<BTreeMap<Endpoint, Vec<String>>> {
    let mut accounts = BTreeMap::new();
    for endpoint in Endpoint::ALL {
        let mut emails = Vec::with_capacity(count);
        for _ in 0..count {
            let email = fresh_email();
            let response = client
                .post(format!("{base}{}", Endpoint::Signup.path()))
                .json(&signup_body(&email))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("signing up an account answered {}", response.status());
            }
            emails.push(email);
        }
        accounts.insert(endpoint, emails);
    }
    Ok(accounts)
}

/// Sends `rounds` rounds, each the six cases in a shuffled order, recording them unless
/// `record` is false.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    accounts: &BTreeMap<Endpoint, Vec<String>>,
    rounds: std::ops::Range<usize>,
    rng: &mut StdRng,
    cases: &mut BTreeMap<(Endpoint, bool), Case>,
    record: bool,
) -> anyhow::Result<()> {
    let mut order: Vec<(Endpoint, bool)> = Endpoint::ALL
        .iter()
        .flat_map(|endpoint| [(*endpoint, true), (*endpoint, false)])
        .collect();
    for round in rounds {
        order.shuffle(rng);
        for &(endpoint, known) in &order {
            let email = if known {
                accounts
                    .get(&endpoint)
                    .and_then(|emails| emails.get(round))
                    .cloned()
                    .context("an account for every round")?
            } else {
                fresh_email()
            };
            let (elapsed, answer) = timed(client, base, endpoint, &email).await?;
            if record {
                cases
                    .entry((endpoint, known))
                    .or_default()
                    .record(elapsed, answer);
            }
        }
    }
    Ok(())
}

/// Runs the benchmark against a service on `database_url`.
async fn run(
    args: &Args,
    database_url: String,
    work_dir: &Path,
    prefix: &str,
) -> anyhow::Result<Report> {
    let mut config = Config::for_tests(
        Some(database_url),
        Some(args.nats_url.clone()),
        prefix,
        work_dir,
    )
    .context("preparing the configuration")?;
    let argon2 = Argon2Params::OWASP_MINIMUM;
    config.argon2.memory_kib = argon2.memory_kib;
    config.argon2.iterations = argon2.iterations;
    config.argon2.parallelism = argon2.parallelism;
    // The production defaults: one hash worker per core, 256 hashes waiting at most.
    config.argon2.workers = None;
    config.argon2.queue = 256;
    config.http.ip_rate_limit = 0;
    config.accounts.signup_existing_email = ExistingEmail::Conceal;

    let mailer = if args.mailer {
        Some(tokio::spawn(twofold_mailer::run(
            mailer_settings(&config)?,
            std::future::pending::<()>(),
        )))
    } else {
        None
    };
    let application = Application::build(config)
        .await
        .context("starting the service")?;
    let base = format!("http://127.0.0.1:{}", application.port());
    let server = tokio::spawn(application.run_until_stopped());

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let total = args.warmup + args.samples;
    eprintln!("signing up {} accounts…", total * Endpoint::ALL.len());
    let accounts = sign_up_accounts(&client, &base, total).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut cases = BTreeMap::new();
    eprintln!("warming up ({} rounds)…", args.warmup);
    measure(
        &client,
        &base,
        &accounts,
        0..args.warmup,
        &mut rng,
        &mut cases,
        false,
    )
    .await?;
    eprintln!("measuring ({} rounds)…", args.samples);
    measure(
        &client,
        &base,
        &accounts,
        args.warmup..total,
        &mut rng,
        &mut cases,
        true,
    )
    .await?;

    server.abort();
    if let Some(mailer) = mailer {
        mailer.abort();
    }

    let pairs = Endpoint::ALL
        .iter()
        .map(|&endpoint| {
            let known = cases.get(&(endpoint, true)).map(Case::report);
            let unknown = cases.get(&(endpoint, false)).map(Case::report);
            let (Some(known), Some(unknown)) = (known, unknown) else {
                bail!("no samples for {endpoint:?}");
            };
            let ratio = known.median_ms / unknown.median_ms;
            let answers_identical = match (known.answers.as_slice(), unknown.answers.as_slice()) {
                ([known], [unknown]) => known.answer == unknown.answer,
                _ => false,
            };
            Ok(PairReport {
                endpoint,
                known,
                unknown,
                ratio,
                timing_pass: (ratio - 1.0).abs() <= args.tolerance,
                answers_identical,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Report {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        samples: args.samples,
        warmup: args.warmup,
        seed: args.seed,
        tolerance: args.tolerance,
        mailer: args.mailer,
        argon2_memory_kib: argon2.memory_kib,
        argon2_iterations: argon2.iterations,
        argon2_parallelism: argon2.parallelism,
        pairs,
    })
}

/// Mailer settings matching `config`: same NATS and prefix, the mail key of its sealing key,
/// delivering into its mail folder.
fn mailer_settings(config: &Config) -> anyhow::Result<twofold_mailer::MailerSettings> {
    use secrecy::ExposeSecret;
    let keys = config.keys().map_err(anyhow::Error::msg)?;
    let topology = config.nats.topology().map_err(anyhow::Error::msg)?;
    let nats_url = config
        .nats
        .url
        .as_ref()
        .context("the configuration has a NATS URL")?;
    let mut settings = twofold_mailer::MailerSettings::new(
        nats_url.expose_secret(),
        topology,
        keys.sealing.mail_key(),
    );
    settings.transport = config.mail.transport()?;
    Ok(settings)
}

/// Deletes the streams and bucket the run declared under `prefix`.
async fn delete_nats_prefix(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    let topology = twofold_nats::Topology::new(prefix).map_err(anyhow::Error::msg)?;
    let client = async_nats::connect(nats_url)
        .await
        .context("NATS is not reachable")?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .delete_key_value(topology.status_bucket())
        .await
        .map_err(|error| anyhow::anyhow!("deleting the status bucket: {error}"))?;
    for stream in [topology.stream(), topology.dead_letter_stream()] {
        jetstream
            .delete_stream(&stream)
            .await
            .map_err(|error| anyhow::anyhow!("deleting stream {stream}: {error}"))?;
    }
    Ok(())
}

/// Drops the benchmark database. The outbox relay of the stopped service may still hold or
/// reopen a connection, which can make the first attempt fail, so it tries a few times.
async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let mut attempt = 1;
    loop {
        match sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut *admin)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if attempt >= 5 => return Err(error),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Prints the table of results.
fn print_table(report: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} samples per case after {} warm-up rounds, seed {}, Argon2id m={} KiB t={} p={}, mailer {}",
        report.samples,
        report.warmup,
        report.seed,
        report.argon2_memory_kib,
        report.argon2_iterations,
        report.argon2_parallelism,
        if report.mailer { "running" } else { "not running" },
    )?;
    writeln!(
        out,
        "{:<16} {:<8} {:>5} {:>10} {:>10} {:>10} {:>7}  {:<7} {:<10}",
        "endpoint", "case", "n", "median ms", "p10 ms", "p90 ms", "ratio", "timing", "answers"
    )?;
    for pair in &report.pairs {
        let endpoint = serde_json::to_value(pair.endpoint)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        for (label, case) in [("known", &pair.known), ("unknown", &pair.unknown)] {
            let (ratio, timing, answers) = if label == "known" {
                (
                    format!("{:.3}", pair.ratio),
                    if pair.timing_pass { "PASS" } else { "FAIL" },
                    if pair.answers_identical {
                        "identical"
                    } else {
                        "DIFFER"
                    },
                )
            } else {
                (String::new(), "", "")
            };
            writeln!(
                out,
                "{:<16} {:<8} {:>5} {:>10.2} {:>10.2} {:>10.2} {:>7}  {:<7} {:<10}",
                endpoint,
                label,
                case.n,
                case.median_ms,
                case.p10_ms,
                case.p90_ms,
                ratio,
                timing,
                answers
            )?;
        }
    }
    for pair in report.pairs.iter().filter(|pair| !pair.answers_identical) {
        writeln!(out, "\n{:?} answers:", pair.endpoint)?;
        for (label, case) in [("known", &pair.known), ("unknown", &pair.unknown)] {
            for answer in &case.answers {
                let body = if answer.answer.body.is_empty() {
                    "(empty body)"
                } else {
                    answer.answer.body.as_str()
                };
                writeln!(
                    out,
                    "  {label:<8} {}× {} {body}",
                    answer.count, answer.answer.status
                )?;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let server = args.database_url.trim_end_matches('/').to_owned();
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .context("Postgres is not reachable")?;
    let name = format!("twofold_bench_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .context("creating the benchmark database")?;
    let prefix = format!("bench-{}", Uuid::new_v4().simple());
    let work_dir = std::env::temp_dir().join(format!("twofold-{prefix}"));

    let outcome = run(&args, format!("{server}/{name}"), &work_dir, &prefix).await;

    if let Err(error) = drop_database(&mut admin, &name).await {
        eprintln!("warning: could not drop database {name}: {error}");
    }
    if let Err(error) = delete_nats_prefix(&args.nats_url, &prefix).await {
        eprintln!("warning: could not delete the NATS streams of prefix {prefix}: {error:#}");
    }
    if let Err(error) = std::fs::remove_dir_all(&work_dir) {
        eprintln!("warning: could not remove {}: {error}", work_dir.display());
    }

    let report = outcome?;
    print_table(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
