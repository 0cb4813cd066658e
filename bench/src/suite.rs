//! The phases of one run, on one stack, each measuring an operation and its limit side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use reqwest::Client;
use tokio::sync::Mutex;
use twofold_api::adapters::Argon2Params;

use crate::client::{self, Tokens};
use crate::cpu;
use crate::limits;
use crate::load::{drive, request, Run, Stats, Until};
use crate::report::{Measure, Series, Target};
use crate::smtp::Received;
use crate::stack::{rebuild_config, Mode, Stack};

const MIB: f64 = 1024.0 * 1024.0;

/// Live sessions a user keeps at once (`MAX_SESSIONS`, documented in SECURITY.md).
const SESSION_CAP: usize = 100;

/// How long and how hard each phase runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub quick: bool,
    /// Length of each timed run.
    pub duration: Duration,
    /// Concurrency levels of the login and test-token curves.
    pub levels: Vec<usize>,
    /// Connections of the overload run (beyond the hash queue).
    pub overload: usize,
    /// Connections of the refresh and raw-command runs.
    pub refresh_concurrency: usize,
    /// Second-factor logins of the `login_tfa` run, each on an account of its own.
    pub tfa_logins: usize,
    /// History lengths of the command latency curve.
    pub histories: Vec<usize>,
    /// Timed refreshes per history length.
    pub history_samples: usize,
    /// Timed sign-ups until their email is handed to the SMTP transport.
    pub email_samples: usize,
    /// JetStream publishes awaited one by one.
    pub ack_samples: usize,
    /// Logins of the memory burst, and its connections.
    pub burst: usize,
    pub burst_concurrency: usize,
    /// Accounts logged in to ([`login_account`] spreads a run's logins over them).
    pub accounts: usize,
    /// Hash workers of Twofold's default pool (one per core) and its queue.
    pub hash_workers: usize,
    pub hash_queue: usize,
    /// Argon2id parameters of Twofold's hashes and of the raw limit.
    pub argon2: Argon2Params,
    /// Seconds the API keeps a user after a command (`None`: the service's default).
    pub recent_users_ttl: Option<u64>,
}

impl Settings {
    /// The Argon2id parameters, as the reports name them.
    pub fn argon2_label(&self) -> String {
        let Argon2Params {
            memory_kib,
            iterations,
            parallelism,
        } = self.argon2;
        let memory = f64::from(memory_kib) / 1024.0;
        format!("{memory} MiB, t={iterations}, p={parallelism}")
    }

    /// What one hash worker holds while busy.
    fn argon2_bytes(&self) -> f64 {
        f64::from(self.argon2.memory_kib) * 1024.0
    }
}

/// What a stack's run gathered for the plots.
#[derive(Default)]
pub struct Curves {
    pub login: Series,
    pub argon2: Series,
    pub test_token: Series,
    pub verify: Series,
    pub history_p50: Series,
    pub history_p99: Series,
    pub email_ms: Vec<f64>,
}

/// One stack's phases.
pub struct StackRun<'a> {
    pub stack: &'a Stack,
    pub settings: &'a Settings,
    pub http: Client,
    pub received: Received,
    pub nats_url: String,
    pub measures: Vec<Measure>,
    pub notes: Vec<String>,
    pub curves: Curves,
    accounts: Vec<String>,
}

/// What the hash workers took of the machine's CPU during a login run, with each part's CPU a
/// login in the method.
fn cpu_share(name: &str, spent: &cpu::CpuTimes, logins: usize) -> Measure {
    let per_login = |seconds: f64| seconds * 1000.0 / logins.max(1) as f64;
    Measure::new(
        name,
        spent.hash / spent.machine.max(1e-9),
        "of the busy CPU",
        &format!(
            "the run above; user + system time from /proc (threads argon2-* of the service, its \
             other threads, every postgres process, the benchmark's process, the machine's busy \
             time) over the run, per login: hash workers {:.2} ms, the rest of the service \
             {:.2} ms, Postgres {:.2} ms, the benchmark {:.2} ms, the rest of the machine \
             {:.2} ms; {:.2} CPU-seconds busy in all. While the cores are full, this share bounds \
             login / raw Argon2, where the hashes have the cores to themselves",
            per_login(spent.hash),
            per_login(spent.service),
            per_login(spent.postgres),
            per_login(spent.benchmark),
            per_login(spent.rest_of_machine().max(0.0)),
            spent.machine,
        ),
    )
}

/// CPU of one command run through Twofold against one raw cqrs-es command, each run sampled
/// apart: what every part spent a command, and how busy the machine was. While the cores are
/// busy in both runs, the ratio of CPU per command bounds the ratio of the rates; cores left
/// idle mean a run waited on something other than them.
fn cpu_per_command(
    name: &str,
    command: (&cpu::CpuTimes, &Run),
    raw: (&cpu::CpuTimes, &Run),
) -> Measure {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let split = |(spent, run): (&cpu::CpuTimes, &Run)| {
        let count = run.ok_ms.len().max(1) as f64;
        let per = |seconds: f64| seconds * 1000.0 / count;
        let busy = spent.machine / (cores * run.elapsed.as_secs_f64()).max(1e-9);
        (
            per(spent.machine),
            format!(
                "the service {:.3} ms, Postgres {:.3} ms, the benchmark {:.3} ms, the rest of the \
                 machine {:.3} ms; the cores {:.0}% busy",
                per(spent.hash + spent.service),
                per(spent.postgres),
                per(spent.benchmark),
                per(spent.rest_of_machine().max(0.0)),
                busy * 100.0
            ),
        )
    };
    let (value, parts) = split(command);
    let (limit, raw_parts) = split(raw);
    Measure::new(
        name,
        value,
        "ms of CPU",
        &format!(
            "the busy CPU of the run above a command, user + system time from /proc: {parts}; \
             limit: the same for its raw cqrs-es commands ({raw_parts})"
        ),
    )
    .against(limit, Target::Report)
}

/// The account a login worker uses for its `n`-th request. Each of `concurrency` workers has a
/// stripe of the accounts of its own (`worker`, `worker + concurrency`, …) and goes round it:
/// no two workers log in to one account at once, and every account gains live sessions at the
/// same slow pace, as a deployment's users do. Workers all on the same few accounts would take
/// those to the session cap within seconds, and measure a login at the cap instead (which
/// [`StackRun::history`] measures apart).
fn login_account(accounts: &[String], concurrency: usize, worker: usize, n: usize) -> String {
    let count = accounts.len();
    let index = if worker < count {
        let stripe = (count - worker).div_ceil(concurrency.max(1));
        worker + concurrency * (n % stripe)
    } else {
        worker % count.max(1)
    };
    accounts.get(index).cloned().unwrap_or_default()
}

fn series(name: &str) -> Series {
    Series {
        name: name.to_owned(),
        points: Vec::new(),
    }
}

impl<'a> StackRun<'a> {
    pub fn new(
        stack: &'a Stack,
        settings: &'a Settings,
        received: Received,
        nats_url: &str,
    ) -> anyhow::Result<Self> {
        let mode = stack.mode.name();
        let http = Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            stack,
            settings,
            http,
            received,
            nats_url: nats_url.to_owned(),
            measures: Vec::new(),
            notes: Vec::new(),
            curves: Curves {
                login: series(&format!("login ({mode})")),
                argon2: series("raw Argon2id verify, same pool"),
                test_token: series(&format!("test-token ({mode})")),
                verify: series("verify-only endpoint"),
                history_p50: series("refresh p50"),
                history_p99: series("refresh p99"),
                email_ms: Vec::new(),
            },
            accounts: Vec::new(),
        })
    }

    fn name(&self, what: &str) -> String {
        format!("{} {what}", self.stack.mode.name())
    }

    fn push(&mut self, measure: Measure) {
        eprintln!(
            "  {}: {:.2} {}{}",
            measure.name,
            measure.value,
            measure.unit,
            measure.ratio.map_or_else(String::new, |ratio| format!(
                " (ratio {ratio:.2}, target {})",
                measure.target
            ))
        );
        self.measures.push(measure);
    }

    fn base(&self) -> &str {
        &self.stack.base
    }

    /// Signs up the accounts the logins and refreshes use.
    pub async fn sign_up_accounts(&mut self) -> anyhow::Result<()> {
        let emails: Vec<String> = (0..self.settings.accounts)
            .map(|_| client::fresh_email("account"))
            .collect();
        let queue = Arc::new(std::sync::Mutex::new(emails.clone()));
        let (http, base) = (self.http.clone(), self.base().to_owned());
        let run = drive(
            4,
            Until::Count(emails.len()),
            request(move |_, _| {
                let (http, base) = (http.clone(), base.clone());
                let email = queue.lock().ok().and_then(|mut queue| queue.pop());
                async move {
                    let email = email.context("an email for every sign-up")?;
                    client::sign_up(&http, &base, &email, None).await
                }
            }),
        )
        .await;
        if run.ok_ms.len() != emails.len() {
            bail!("sign-ups failed: {:?}", run.first_other);
        }
        self.accounts = emails;
        Ok(())
    }

    async fn wait_idle(&self) {
        // Long enough for the hash workers to finish and free their buffers, and for the
        // outbox, projections and mailer to settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// The peak RSS of the API and the mailer while `work` runs, sampled every 10 ms.
    async fn peak_rss_during<F: std::future::Future>(&self, work: F) -> (F::Output, u64, u64) {
        let sampler_pids = (
            self.stack.api.id(),
            self.stack
                .mailer
                .as_ref()
                .and_then(tokio::process::Child::id),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut api, mut mailer) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(rss) = sampler_pids.0.and_then(crate::stack::rss_of) {
                        api = api.max(rss);
                    }
                    if let Some(rss) = sampler_pids.1.and_then(crate::stack::rss_of) {
                        mailer = mailer.max(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (api, mailer)
            })
        };
        let output = work.await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (api, mailer) = sampler.await.unwrap_or_default();
        (output, api, mailer)
    }

    /// The bytes the embedded store says it holds (`/metrics`); 0 on Postgres.
    async fn embedded_store_bytes(&self) -> anyhow::Result<f64> {
        Ok(
            client::metric(&self.http, self.base(), "twofold_embedded_store_bytes")
                .await?
                .unwrap_or(0.0),
        )
    }

    /// Idle RSS; the peak while as many connections as the burst's only ask `/health/live`
    /// (what the connections themselves hold, without hashing); the peak during a burst of
    /// logins; the RSS after it.
    pub async fn memory(&mut self, fresh: (Option<u64>, Option<u64>)) -> anyhow::Result<()> {
        self.wait_idle().await;
        let (api_idle, mailer_idle) = self.stack.rss();
        let api_idle = api_idle.context("reading the API's RSS")?;
        let mode = self.stack.mode;
        let settings = self.settings;
        let store_before = self.embedded_store_bytes().await?;
        let health = format!("{}/health/live", self.base());
        let connections = {
            let (http, health) = (self.http.clone(), health.clone());
            drive(
                settings.burst_concurrency,
                Until::Elapsed(Duration::from_secs(2)),
                request(move |_, _| {
                    let (http, health) = (http.clone(), health.clone());
                    async move { client::get(&http, &health).await }
                }),
            )
        };
        let (_, api_connections, _) = self.peak_rss_during(connections).await;
        let burst = self.logins(settings.burst_concurrency, Until::Count(settings.burst));
        let (run, api_peak, mailer_peak) = self.peak_rss_during(burst).await;
        if run.ok_ms.len() + run.busy_ms.len() != settings.burst {
            bail!("the burst's logins failed: {:?}", run.first_other);
        }
        self.wait_idle().await;
        let (api_after, mailer_after) = self.stack.rss();
        let api_after = api_after.context("reading the API's RSS")?;
        let store_growth = (self.embedded_store_bytes().await? - store_before).max(0.0);

        let pool_bytes = (settings.hash_workers as f64) * settings.argon2_bytes();
        let method = format!(
            "VmRSS of the process from /proc, sampled every 10 ms; idle = 2 s after the sign-ups \
             of the accounts (every hash worker done), burst = {} logins by {} connections",
            settings.burst, settings.burst_concurrency
        );
        if let (Some(api_fresh), mailer_fresh) = fresh {
            self.push(Measure::new(
                &self.name("API RSS just started"),
                api_fresh as f64 / MIB,
                "MiB",
                &method,
            ));
            if let Some(mailer_fresh) = mailer_fresh {
                self.push(Measure::new(
                    "postgres mailer RSS just started",
                    mailer_fresh as f64 / MIB,
                    "MiB",
                    &method,
                ));
            }
        }
        self.push(Measure::new(
            &self.name("API RSS idle"),
            api_idle as f64 / MIB,
            "MiB",
            &method,
        ));
        if let Some(mailer_idle) = mailer_idle {
            self.push(Measure::new(
                "postgres mailer RSS idle",
                mailer_idle as f64 / MIB,
                "MiB",
                &method,
            ));
            self.push(
                Measure::new(
                    "postgres stack RSS idle (API + mailer)",
                    (api_idle + mailer_idle) as f64 / MIB,
                    "MiB",
                    &method,
                )
                .bounded(Target::AtMost(35.0)),
            );
        } else {
            self.push(
                Measure::new(
                    &self.name("stack RSS idle"),
                    api_idle as f64 / MIB,
                    "MiB",
                    &method,
                )
                .bounded(Target::AtMost(35.0)),
            );
        }
        self.push(Measure::new(
            &self.name(&format!(
                "API RSS peak, {} connections of /health/live",
                settings.burst_concurrency
            )),
            api_connections as f64 / MIB,
            "MiB",
            &format!(
                "{method}; {} connections asking /health/live for 2 s: the memory the \
                 connections hold, with no hashing",
                settings.burst_concurrency
            ),
        ));
        let base = api_idle.max(api_connections) as f64;
        self.push(
            Measure::new(
                &self.name("API RSS peak, login burst"),
                api_peak as f64 / MIB,
                "MiB",
                &format!(
                    "{method}; limit: the base (the larger of idle and the peak with as many \
                     connections asking /health/live) + hash workers x {} MiB (Argon2id's \
                     memory) + the growth of the embedded store (the events the burst stored, \
                     as after the burst)",
                    settings.argon2_bytes() / MIB
                ),
            )
            .against(
                (base + pool_bytes + store_growth) / MIB,
                Target::AtMost(1.0),
            ),
        );
        if let (Some(_), Some(mailer_after)) = (mailer_idle, mailer_after) {
            self.push(Measure::new(
                "postgres mailer RSS peak, login burst",
                mailer_peak as f64 / MIB,
                "MiB",
                &method,
            ));
            self.push(Measure::new(
                "postgres mailer RSS after burst",
                mailer_after as f64 / MIB,
                "MiB",
                &method,
            ));
        }
        if mode == Mode::Embedded {
            self.push(Measure::new(
                "embedded store growth during the burst",
                store_growth / MIB,
                "MiB",
                "twofold_embedded_store_bytes in /metrics after the burst minus before: the \
                 serialized events the burst stored, a lower bound of the heap they take",
            ));
        }
        self.push(
            Measure::new(
                &self.name("API RSS 2 s after burst"),
                api_after as f64 / MIB,
                "MiB",
                &format!(
                    "{method}; limit: idle + the growth of the embedded store (the events the \
                     burst stored, which it keeps by design; 0 on Postgres)"
                ),
            )
            .against((api_idle as f64 + store_growth) / MIB, Target::AtMost(1.2)),
        );
        Ok(())
    }

    /// Logins with the right password by `concurrency` connections, each going round accounts
    /// of its own ([`login_account`]).
    fn logins(
        &self,
        concurrency: usize,
        until: Until,
    ) -> impl std::future::Future<Output = Run> + Send + use<> {
        let accounts = Arc::new(self.accounts.clone());
        let (http, base) = (self.http.clone(), self.base().to_owned());
        drive(
            concurrency,
            until,
            request(move |worker, n| {
                let (http, base) = (http.clone(), base.clone());
                let email = login_account(&accounts, concurrency, worker, n);
                async move {
                    let (status, _) = client::log_in(&http, &base, &email).await?;
                    Ok(status)
                }
            }),
        )
    }

    /// Login throughput against raw Argon2id verifications on the same pool, at each level.
    pub async fn login_curve(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let pool =
            limits::argon2_pool(settings.argon2, settings.hash_workers, settings.hash_queue)?;
        for &level in &settings.levels {
            let raw =
                limits::argon2_verifications(&pool, level, Until::Elapsed(settings.duration)).await;
            let before = cpu::sample(self.stack.api.id());
            let login = self.logins(level, Until::Elapsed(settings.duration)).await;
            let spent = cpu::sample(self.stack.api.id()).since(&before);
            if login.other > 0 {
                bail!("logins at {level} failed: {:?}", login.first_other);
            }
            self.curves.argon2.points.push((level as f64, raw.rate()));
            self.curves.login.points.push((level as f64, login.rate()));
            let target = if level >= 16 {
                Target::AtLeast(0.9)
            } else {
                Target::Report
            };
            let stats = login.ok();
            self.push(
                Measure::new(
                    &self.name(&format!("login, {level} connections")),
                    login.rate(),
                    "logins/s",
                    &format!(
                        "closed loop, {level} connections for {:?}, password logins without 2FA on \
                         {} accounts; limit: raw Argon2id verifications/s at the same parameters \
                         ({}) through the same bounded pool ({} workers, queue {}) \
                         in the benchmark process, by {level} callers, measured just before; \
                         p50 {:.0} ms, p99 {:.0} ms, {} answered 503",
                        settings.duration,
                        self.accounts.len(),
                        settings.argon2_label(),
                        settings.hash_workers,
                        settings.hash_queue,
                        stats.p50,
                        stats.p99,
                        login.busy_ms.len()
                    ),
                )
                .against(raw.rate(), target),
            );
            if level >= 16 {
                self.push(Measure::new(
                    &self.name(&format!("login p50, {level} connections")),
                    stats.p50,
                    "ms",
                    "same run as the line above",
                ));
                self.push(Measure::new(
                    &self.name(&format!("login p99, {level} connections")),
                    stats.p99,
                    "ms",
                    "same run as the line above",
                ));
                self.push(cpu_share(
                    &self.name(&format!(
                        "hash workers' share of the CPU, {level} connections"
                    )),
                    &spent,
                    login.ok_ms.len(),
                ));
            }
        }
        Ok(())
    }

    /// Logins by more connections than the pool and its queue hold.
    pub async fn overload(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let level = settings.overload;
        let pool =
            limits::argon2_pool(settings.argon2, settings.hash_workers, settings.hash_queue)?;
        let raw = limits::argon2_verifications(&pool, 64, Until::Elapsed(settings.duration)).await;
        let login = self.logins(level, Until::Elapsed(settings.duration)).await;
        if login.other > 0 {
            bail!("overload logins failed: {:?}", login.first_other);
        }
        let (ok, busy) = (login.ok(), login.busy());
        let method = format!(
            "{level} connections for {:?} against a pool of {} workers and a queue of {}: \
             answers beyond the queue are 503 service.busy with Retry-After (checked on every \
             one); a client waits its Retry-After (1 s) before trying again, outside the measured \
             latency; {} logins \
             succeeded (p50 {:.0} ms, p99 {:.0} ms), {} got 503 (p50 {:.1} ms, p99 {:.1} ms)",
            settings.duration,
            settings.hash_workers,
            settings.hash_queue,
            ok.n,
            ok.p50,
            ok.p99,
            busy.n,
            busy.p50,
            busy.p99
        );
        self.push(
            Measure::new(
                &self.name(&format!("login, {level} connections (overload)")),
                login.rate(),
                "logins/s",
                &method,
            )
            .against(raw.rate(), Target::AtLeast(0.9)),
        );
        if busy.n > 0 {
            self.push(
                Measure::new(&self.name("overload 503 p99"), busy.p99, "ms", &method)
                    .against(ok.p50, Target::AtMost(0.1)),
            );
        } else {
            self.notes.push(format!(
                "{}: no login got 503 at {level} connections",
                self.stack.mode.name()
            ));
        }
        Ok(())
    }

    /// One access token per account.
    async fn tokens(&self, count: usize) -> anyhow::Result<Vec<Tokens>> {
        let mut tokens = Vec::with_capacity(count);
        for email in self.accounts.iter().take(count) {
            let (status, pair) = client::log_in(&self.http, self.base(), email).await?;
            tokens.push(pair.with_context(|| format!("logging in answered {status}"))?);
        }
        Ok(tokens)
    }

    async fn test_tokens(
        &self,
        url: &str,
        tokens: &Arc<Vec<String>>,
        level: usize,
        duration: Duration,
    ) -> Run {
        let (http, url, tokens) = (self.http.clone(), url.to_owned(), Arc::clone(tokens));
        drive(
            level,
            Until::Elapsed(duration),
            request(move |worker, _| {
                let (http, url) = (http.clone(), url.clone());
                let token = tokens
                    .get(worker % tokens.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                async move { client::test_token(&http, &url, &token).await }
            }),
        )
        .await
    }

    /// test-token against a verify-only endpoint with the same key and algorithm.
    pub async fn test_token_curve(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let pairs = self.tokens(self.accounts.len().min(64)).await?;
        let access: Arc<Vec<String>> =
            Arc::new(pairs.iter().map(|pair| pair.access_token.clone()).collect());
        let service = limits::token_service(&self.stack.jwt_key_pem)?;
        let verify = limits::spawn_verify_endpoint(&self.stack.jwt_key_file).await?;
        let test_token_url = format!("{}/api/v1/auth/test-token", self.base());
        let (mut best_tt, mut best_verify, mut best_level) = (0.0f64, 0.0f64, 1);
        for &level in &settings.levels {
            let verify = self
                .test_tokens(&verify.url, &access, level, settings.duration)
                .await;
            let tt = self
                .test_tokens(&test_token_url, &access, level, settings.duration)
                .await;
            if tt.other > 0 || verify.other > 0 {
                bail!(
                    "test-token at {level}: {:?} {:?}",
                    tt.first_other,
                    verify.first_other
                );
            }
            self.curves
                .verify
                .points
                .push((level as f64, verify.rate()));
            self.curves
                .test_token
                .points
                .push((level as f64, tt.rate()));
            if tt.rate() > best_tt {
                (best_tt, best_level) = (tt.rate(), level);
            }
            best_verify = best_verify.max(verify.rate());
            let stats = tt.ok();
            self.push(
                Measure::new(
                    &self.name(&format!("test-token, {level} connections")),
                    tt.rate(),
                    "req/s",
                    &format!(
                        "closed loop, {level} connections for {:?}, {} users' access tokens; \
                         limit: a verify-only endpoint (GET, bearer EdDSA token checked with the \
                         same key, claims and code, `TokenService::verify`, answering the subject \
                         as JSON) on axum in a process of its own with {} runtime threads, as \
                         Twofold, measured just before; p50 {:.2} ms, p99 {:.2} ms",
                        settings.duration,
                        access.len(),
                        settings.hash_workers,
                        stats.p50,
                        stats.p99
                    ),
                )
                .against(verify.rate(), Target::Report),
            );
        }
        self.push(
            Measure::new(
                &self.name("test-token, best level"),
                best_tt,
                "req/s",
                "the highest rate of the levels above; limit: the verify-only endpoint's highest",
            )
            .against(best_verify, Target::AtLeast(0.8)),
        );
        // The same endpoint inside the benchmark's process, at test-token's best level: it
        // shares the load generator's address space, so its context switches are cheaper than
        // those between two processes, and it runs faster than it would standing alone.
        let in_bench_url =
            limits::start_verify_endpoint(Arc::clone(&service), settings.hash_workers)?;
        let in_bench = self
            .test_tokens(&in_bench_url, &access, best_level, settings.duration)
            .await;
        self.push(
            Measure::new(
                &self.name("test-token vs verify-only inside the benchmark process"),
                best_tt,
                "req/s",
                &format!(
                    "limit: the same verify-only endpoint on {} runtime threads inside the \
                     benchmark's own process, at {best_level} connections (test-token's best \
                     level), measured after the curve",
                    settings.hash_workers
                ),
            )
            .against(in_bench.rate(), Target::Report),
        );
        let in_process = limits::verify_in_process(
            &service,
            access.first().map(String::as_str).unwrap_or_default(),
            settings.hash_workers,
            settings.duration.min(Duration::from_secs(3)),
        );
        self.push(
            Measure::new(
                &self.name("test-token vs in-process verify"),
                best_tt,
                "req/s",
                &format!(
                    "limit: access-token verifications/s in-process (no HTTP) on {} threads",
                    settings.hash_workers
                ),
            )
            .against(in_process, Target::Report),
        );
        Ok(())
    }

    /// Refreshes by `level` workers, each rotating its own session's tokens.
    async fn refreshes(
        &self,
        refresh_tokens: &[Arc<Mutex<String>>],
        level: usize,
        until: Until,
    ) -> Run {
        let (http, base) = (self.http.clone(), self.base().to_owned());
        let tokens: Arc<Vec<Arc<Mutex<String>>>> = Arc::new(refresh_tokens.to_vec());
        drive(
            level,
            until,
            request(move |worker, _| {
                let (http, base) = (http.clone(), base.clone());
                let slot = tokens.get(worker % tokens.len().max(1)).cloned();
                async move {
                    let slot = slot.context("a session per worker")?;
                    let mut token = slot.lock().await;
                    let (status, pair) = client::refresh(&http, &base, &token).await?;
                    if let Some(next) = pair.and_then(|pair| pair.refresh_token) {
                        *token = next;
                    }
                    Ok(status)
                }
            }),
        )
        .await
    }

    async fn refresh_slots(&self, count: usize) -> anyhow::Result<Vec<Arc<Mutex<String>>>> {
        Ok(self
            .tokens(count)
            .await?
            .into_iter()
            .filter_map(|pair| pair.refresh_token)
            .map(|token| Arc::new(Mutex::new(token)))
            .collect())
    }

    /// Refresh against the raw cqrs-es command rate on the same database.
    pub async fn refresh_rate(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let level = settings.refresh_concurrency;
        let slots = self.refresh_slots(level).await?;
        let stack = self.stack;
        let api = stack.api.id();
        let raw = match &stack.database {
            Some((_, pool)) => {
                let before = cpu::sample(api);
                let run =
                    limits::raw_commands(pool, level, Until::Elapsed(settings.duration)).await?;
                Some((run, cpu::sample(api).since(&before)))
            }
            None => None,
        };
        let before = cpu::sample(api);
        let refresh = self
            .refreshes(&slots, level, Until::Elapsed(settings.duration))
            .await;
        let spent = cpu::sample(api).since(&before);
        if refresh.other > 0 {
            bail!("refreshes failed: {:?}", refresh.first_other);
        }
        let stats = refresh.ok();
        let mut measure = Measure::new(
            &self.name(&format!("refresh, {level} connections")),
            refresh.rate(),
            "refreshes/s",
            &format!(
                "closed loop, {level} connections for {:?}, each rotating its own session; \
                 limit: raw cqrs-es commands/s (load, handle, append one event; a counter \
                 aggregate with at most 10 events, no queries) through postgres-es on the same \
                 database, in tables of its own, by {level} workers, measured just before; \
                 p50 {:.2} ms, p99 {:.2} ms",
                settings.duration, stats.p50, stats.p99
            ),
        );
        let Some((raw, raw_spent)) = raw else {
            self.push(measure);
            return Ok(());
        };
        if raw.other > 0 {
            bail!("raw commands failed: {:?}", raw.first_other);
        }
        measure = measure.against(raw.rate(), Target::AtLeast(0.5));
        self.push(measure);
        self.push(cpu_per_command(
            &self.name(&format!("CPU a refresh, {level} connections")),
            (&spent, &refresh),
            (&raw_spent, &raw),
        ));
        Ok(())
    }

    /// `count` accounts with an authenticator app, each signed up and logged in with its
    /// password: a pre-2FA token and the app's seed each. Four connections, as the sign-ups.
    async fn pre_2fa_accounts(&self, count: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let prepared = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
        let (http, base) = (self.http.clone(), self.base().to_owned());
        let run = {
            let prepared = Arc::clone(&prepared);
            drive(
                4,
                Until::Count(count),
                request(move |_, _| {
                    let (http, base, prepared) = (http.clone(), base.clone(), prepared.clone());
                    async move {
                        let email = client::fresh_email("tfa");
                        let seed = client::sign_up_with_app(&http, &base, &email).await?;
                        let token = client::pre_2fa_token(&http, &base, &email).await?;
                        prepared
                            .lock()
                            .map_err(|_| anyhow::anyhow!("a worker panicked"))?
                            .push((token, seed));
                        Ok(200)
                    }
                }),
            )
            .await
        };
        if run.ok_ms.len() != count {
            bail!(
                "preparing second-factor logins failed: {:?}",
                run.first_other
            );
        }
        let prepared = std::mem::take(
            &mut *prepared
                .lock()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))?,
        );
        Ok(prepared)
    }

    /// Second-factor logins (`tfa/login_tfa` with the app's current code) against the raw
    /// cqrs-es command rate on the same database. A pre-2FA token serves one login, and an
    /// account passes one code per 30-second step (replay protection), so each login has an
    /// account of its own, prepared first (a sign-up and a password login: two hashes each,
    /// not timed).
    pub async fn login_tfa_rate(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let (level, count) = (settings.refresh_concurrency, settings.tfa_logins);
        let Some((_, pool)) = &self.stack.database else {
            bail!("the raw command rate needs the database");
        };
        let prepared = Arc::new(self.pre_2fa_accounts(count).await?);
        let api = self.stack.api.id();
        let before = cpu::sample(api);
        let raw = limits::raw_commands(pool, level, Until::Count(count)).await?;
        let raw_spent = cpu::sample(api).since(&before);
        if raw.other > 0 {
            bail!("raw commands failed: {:?}", raw.first_other);
        }
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (http, base) = (self.http.clone(), self.base().to_owned());
        let before = cpu::sample(api);
        let run = drive(
            level,
            Until::Count(count),
            request(move |_, _| {
                let (http, base) = (http.clone(), base.clone());
                let account = prepared
                    .get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    .cloned();
                async move {
                    let (pre_2fa, seed) = account.context("an account for every login")?;
                    let code = client::current_code(&seed)?;
                    client::login_tfa(&http, &base, &pre_2fa, &code).await
                }
            }),
        )
        .await;
        let spent = cpu::sample(api).since(&before);
        if run.other > 0 || run.ok_ms.len() != count {
            bail!("second-factor logins failed: {:?}", run.first_other);
        }
        let stats = run.ok();
        self.push(
            Measure::new(
                &self.name(&format!("login_tfa, {level} connections")),
                run.rate(),
                "logins/s",
                &format!(
                    "closed loop, {level} connections, {count} second-factor logins with an \
                     authenticator app's current code, each on an account of its own (signed up \
                     and logged in with its password first, not timed); limit: as many raw \
                     cqrs-es commands (as for refresh) by {level} workers, just before; \
                     p50 {:.2} ms, p99 {:.2} ms",
                    stats.p50, stats.p99
                ),
            )
            .against(raw.rate(), Target::AtLeast(0.5)),
        );
        self.push(cpu_per_command(
            &self.name(&format!("CPU a login_tfa, {level} connections")),
            (&spent, &run),
            (&raw_spent, &raw),
        ));
        Ok(())
    }

    /// test-token and refresh latency alone, then while logins saturate the hash pool.
    pub async fn latency_under_login_load(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let level = 4;
        let skip = settings.refresh_concurrency;
        let pairs = self.tokens(self.accounts.len().min(64)).await?;
        let access: Arc<Vec<String>> =
            Arc::new(pairs.iter().map(|pair| pair.access_token.clone()).collect());
        let slots: Vec<Arc<Mutex<String>>> = self
            .tokens(skip + level)
            .await?
            .into_iter()
            .skip(skip)
            .filter_map(|pair| pair.refresh_token)
            .map(|token| Arc::new(Mutex::new(token)))
            .collect();
        let url = format!("{}/api/v1/auth/test-token", self.base());
        let mut results = Vec::new();
        for loaded in [false, true] {
            let logins = loaded.then(|| {
                let duration = settings.duration + Duration::from_millis(500);
                tokio::spawn(self.logins(64, Until::Elapsed(duration)))
            });
            if loaded {
                // Let the queue fill first.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let (tt, refresh) = tokio::join!(
                self.test_tokens(&url, &access, level, settings.duration),
                self.refreshes(&slots, level, Until::Elapsed(settings.duration)),
            );
            let login_rate = match logins {
                Some(handle) => Some(handle.await?.rate()),
                None => None,
            };
            if tt.other > 0 || refresh.other > 0 {
                bail!(
                    "latency runs failed: {:?} {:?}",
                    tt.first_other,
                    refresh.first_other
                );
            }
            results.push((tt.ok(), refresh.ok(), login_rate));
        }
        let [(tt_alone, refresh_alone, _), (tt_loaded, refresh_loaded, login_rate)] =
            results.as_slice()
        else {
            bail!("two runs expected");
        };
        let method = format!(
            "{level} connections each of test-token and refresh for {:?}, first alone, then while \
             64 connections log in ({:.0} logins/s, the hash pool saturated); limit: the p99 alone",
            settings.duration,
            login_rate.unwrap_or(f64::NAN)
        );
        self.push(
            Measure::new(
                &self.name("test-token p99 during login flood"),
                tt_loaded.p99,
                "ms",
                &method,
            )
            .against(tt_alone.p99, Target::AtMost(2.0)),
        );
        self.push(
            Measure::new(
                &self.name("refresh p99 during login flood"),
                refresh_loaded.p99,
                "ms",
                &method,
            )
            .against(refresh_alone.p99, Target::AtMost(2.0)),
        );
        self.push(
            Measure::new(
                &self.name("test-token p50 during login flood"),
                tt_loaded.p50,
                "ms",
                &method,
            )
            .against(tt_alone.p50, Target::Report),
        );
        self.push(
            Measure::new(
                &self.name("refresh p50 during login flood"),
                refresh_loaded.p50,
                "ms",
                &method,
            )
            .against(refresh_alone.p50, Target::Report),
        );
        Ok(())
    }

    /// Refresh latency on users with longer and longer histories.
    pub async fn history(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let mut users = Vec::new();
        for &events in &settings.histories {
            let email = client::fresh_email("history");
            client::sign_up(&self.http, self.base(), &email, None).await?;
            let (_, pair) = client::log_in(&self.http, self.base(), &email).await?;
            let mut token = pair
                .and_then(|pair| pair.refresh_token)
                .context("a refresh token")?;
            // Sign-up and login wrote two events; each refresh writes one.
            for _ in 2..events {
                let (_, pair) = client::refresh(&self.http, self.base(), &token).await?;
                token = pair
                    .and_then(|pair| pair.refresh_token)
                    .context("a refresh token")?;
            }
            users.push((events, token, Vec::with_capacity(settings.history_samples)));
        }
        // One more user, at the session cap: every login and refresh reads and writes all of a
        // user's live sessions. Refreshed in the same rounds, it is measured apart.
        let email = client::fresh_email("sessions");
        client::sign_up(&self.http, self.base(), &email, None).await?;
        let mut token = String::new();
        for _ in 0..SESSION_CAP {
            let (status, pair) = client::log_in(&self.http, self.base(), &email).await?;
            token = pair
                .and_then(|pair| pair.refresh_token)
                .with_context(|| format!("logging in answered {status}"))?;
        }
        let capped = users.len();
        users.push((
            SESSION_CAP,
            token,
            Vec::with_capacity(settings.history_samples),
        ));
        // Timed on an instance that keeps no user after a command, so that each refresh
        // loads its user from the store, as a command on a user idle for a while does (the
        // first instance would start every one of them from what the last left).
        let loading = self
            .stack
            .another_instance(&[("TWOFOLD_RECENT_USERS_TTL", "0".to_owned())])
            .await?;
        let mut order: Vec<usize> = (0..users.len()).collect();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let timed = async {
            // The first round, untimed, warms the new instance up (its pool's connections,
            // their statement caches).
            for round in 0..=settings.history_samples {
                order.shuffle(&mut rng);
                for &index in &order {
                    let Some((_, token, millis)) = users.get_mut(index) else {
                        continue;
                    };
                    let sent = Instant::now();
                    let (_, pair) = client::refresh(&self.http, &loading.base, token).await?;
                    if round > 0 {
                        millis.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    *token = pair
                        .and_then(|pair| pair.refresh_token)
                        .context("a refresh token")?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        loading.stop().await;
        timed?;
        let mut stats: Vec<(usize, Stats)> = users
            .iter()
            .map(|(events, _, millis)| (*events, Stats::of(millis)))
            .collect();
        let (_, at_cap) = stats.remove(capped);
        for (events, stat) in &stats {
            self.curves
                .history_p50
                .points
                .push((*events as f64, stat.p50));
            self.curves
                .history_p99
                .points
                .push((*events as f64, stat.p99));
        }
        if let (Some((short, first)), Some((long, last))) = (stats.first(), stats.last()) {
            let method = format!(
                "one connection, {} rounds, each refreshing every user once in a shuffled order, \
                 on a second instance that keeps no user after a command (each refresh loads \
                 its user from the store); users with {:?} events (sign-up, login, then \
                 refreshes); limit: the same on the {short}-event user",
                settings.history_samples, settings.histories
            );
            self.push(
                Measure::new(
                    &self.name(&format!("refresh p50, {long}-event user")),
                    last.p50,
                    "ms",
                    &method,
                )
                .against(first.p50, Target::AtMost(1.5)),
            );
            self.push(
                Measure::new(
                    &self.name(&format!("refresh p99, {long}-event user")),
                    last.p99,
                    "ms",
                    &method,
                )
                .against(first.p99, Target::AtMost(1.5)),
            );
            let method = format!(
                "the same rounds; a user signed up and logged in {SESSION_CAP} times (the \
                 session cap: a login beyond it ends the oldest session), refreshing the last \
                 session; limit: the same on the {short}-event user, who has one session"
            );
            for (quantile, value, limit) in [
                ("p50", at_cap.p50, first.p50),
                ("p99", at_cap.p99, first.p99),
            ] {
                self.push(
                    Measure::new(
                        &self.name(&format!(
                            "refresh {quantile}, user with {SESSION_CAP} live sessions"
                        )),
                        value,
                        "ms",
                        &method,
                    )
                    .against(limit, Target::Report),
                );
            }
        }
        Ok(())
    }

    /// Sign-up → email handed to the SMTP transport, against JetStream publish-ack latency.
    pub async fn email(&mut self) -> anyhow::Result<()> {
        let settings = self.settings;
        let mut millis = Vec::with_capacity(settings.email_samples);
        for _ in 0..settings.email_samples {
            let email = client::fresh_email("mail");
            let sent = Instant::now();
            let status = client::sign_up(&self.http, self.base(), &email, Some("email")).await?;
            if status != 200 {
                bail!("sign-up answered {status}");
            }
            let deadline = sent + Duration::from_secs(30);
            let arrived = loop {
                if let Some(at) = self.received.at(&email) {
                    break at;
                }
                if Instant::now() > deadline {
                    bail!("no email for {email} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            millis.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
        }
        let acks = limits::publish_acks(
            &self.nats_url,
            &self.stack.nats_prefix,
            settings.ack_samples,
        )
        .await?;
        let stats = Stats::of(&millis);
        let method = format!(
            "{} sign-ups with 2FA by email, one at a time, each timed from sending the request to \
             the end of the message's DATA at an SMTP sink in the benchmark (the mailer's SMTP \
             transport, through the outbox, the relay and JetStream; Argon2 included), p50 \
             {:.1} ms; limit: p99 of {} JetStream publishes of 1 KiB awaited until acknowledged \
             (p50 {:.2} ms); the target is to keep the issue's p99 of about 29 ms",
            settings.email_samples, stats.p50, settings.ack_samples, acks.p50
        );
        self.push(
            Measure::new("postgres sign-up → email p99", stats.p99, "ms", &method)
                .against(acks.p99, Target::Report),
        );
        self.push(Measure::new(
            "postgres sign-up → email p50",
            stats.p50,
            "ms",
            &method,
        ));
        self.curves.email_ms = millis;
        Ok(())
    }

    /// The view rebuild against a raw scan of the events table.
    pub async fn rebuild(&mut self) -> anyhow::Result<()> {
        let stack = self.stack;
        let (Some((_, pool)), Some(url)) = (&stack.database, &stack.database_url) else {
            return Ok(());
        };
        let (scan_before, events) = limits::scan_events(pool).await?;
        let config = rebuild_config(stack, url)?;
        let opening = Instant::now();
        let (app, _pool) = twofold_api::operator::app(&config, "views rebuild").await?;
        let start_up = opening.elapsed().as_secs_f64();
        let start = Instant::now();
        let report = app.rebuild_views(false).await?;
        let elapsed = start.elapsed().as_secs_f64();
        drop(app);
        let (scan_after, _) = limits::scan_events(pool).await?;
        let rate = report.events as f64 / elapsed;
        self.push(
            Measure::new(
                "postgres views rebuild",
                rate,
                "events/s",
                &format!(
                    "`twofold views rebuild` without --apply, in-process, once its start-up is \
                     done (`App::rebuild_views` after `operator::app`): shadow tables created, \
                     {} events of {} users replayed into them, compared with the live views \
                     and dropped, {:.3} s wall time ({} differences; the replay alone {:.3} s); \
                     limit: a raw `SELECT` of every row of the events table ({events} rows, in \
                     no order: a sequential scan) decoding the JSON payload, on an open pool, \
                     mean of one scan before and one after ({:.0} and {:.0} events/s)",
                    report.events,
                    report.users,
                    elapsed,
                    report.differences.len(),
                    report.elapsed.as_secs_f64(),
                    scan_before,
                    scan_after
                ),
            )
            .against((scan_before + scan_after) / 2.0, Target::AtLeast(0.5)),
        );
        self.push(Measure::new(
            "postgres views rebuild start-up",
            start_up * 1000.0,
            "ms",
            "what `twofold views rebuild` does before the rebuild, as every subcommand on the \
             database does (`operator::app`): connecting, checking the migrations, bringing \
             older data up to date, starting the password hasher",
        ));
        Ok(())
    }
}
