//! The limits each operation is held to, measured in the same run as the operation:
//! raw Argon2id verifications on the same pool, JWT verification alone (as an endpoint and
//! in-process), a raw cqrs-es command, a raw scan of the events table and a NATS publish-ack.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use futures::TryStreamExt;
use postgres_es::PostgresEventRepository;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use twofold_api::adapters::{Argon2Hasher, Argon2Params, DEFAULT_NICE_STEPS};
use twofold_api::http::jwt::{Access, JwtKey, Lifetimes, TokenService};

use crate::load::{drive, request, Run, Stats, Until};

/// The pool Twofold starts by default (one worker per core, 256 waiting, below the process's
/// priority as Twofold's), hashing with `params`.
pub fn argon2_pool(
    params: Argon2Params,
    workers: usize,
    queue: usize,
) -> anyhow::Result<Arc<Argon2Hasher>> {
    Ok(Arc::new(
        Argon2Hasher::start(params, workers, queue, DEFAULT_NICE_STEPS)
            .map_err(|error| anyhow::anyhow!("starting the Argon2 pool: {error:?}"))?,
    ))
}

/// Raw Argon2id verifications through `pool` by `concurrency` callers.
pub async fn argon2_verifications(
    pool: &Arc<Argon2Hasher>,
    concurrency: usize,
    until: Until,
) -> Run {
    let pool = Arc::clone(pool);
    let password = SecretString::from("correct horse battery staple");
    drive(
        concurrency,
        until,
        request(move |_, _| {
            let pool = Arc::clone(&pool);
            let password = password.clone();
            async move {
                Ok(match pool.verify_dummy(&password).await {
                    Ok(()) => 200,
                    Err(_) => 503,
                })
            }
        }),
    )
    .await
}

/// A token service with Twofold's key and default claims, for verifying its access tokens.
pub fn token_service(pem: &str) -> anyhow::Result<Arc<TokenService>> {
    let key = JwtKey::from_pem(pem).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(TokenService::new(
        key,
        "twofold".to_owned(),
        "twofold".to_owned(),
        Lifetimes {
            access: Duration::from_secs(1800),
            refresh: Duration::from_secs(86_400),
            pre_tfa: Duration::from_secs(300),
        },
    )))
}

/// Access-token verifications per second on `threads` threads, in-process, no HTTP.
pub fn verify_in_process(
    tokens: &Arc<TokenService>,
    token: &str,
    threads: usize,
    duration: Duration,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (tokens, token, stop, count) = (
                Arc::clone(tokens),
                token.to_owned(),
                Arc::clone(&stop),
                Arc::clone(&count),
            );
            std::thread::spawn(move || {
                let mut local = 0;
                while !stop.load(Ordering::Relaxed) {
                    if tokens.verify::<Access>(&token).is_ok() {
                        local += 1;
                    }
                }
                count.fetch_add(local, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[derive(Serialize)]
struct Verified {
    sub: String,
}

async fn verify_only(
    State(tokens): State<Arc<TokenService>>,
    headers: HeaderMap,
) -> Result<Json<Verified>, StatusCode> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let claims = tokens
        .verify::<Access>(token)
        .map_err(|_| StatusCode::UNAUTHORIZED)?;
    Ok(Json(Verified {
        sub: claims.sub.to_string(),
    }))
}

/// A verify-only endpoint in the benchmark's own process, on its own runtime with as many
/// worker threads as Twofold's (one per core): `GET /verify` checks the bearer token with the
/// same key, algorithm and claims as `test-token` and answers its subject. Returns its URL.
pub fn start_verify_endpoint(tokens: Arc<TokenService>, threads: usize) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/verify", listener.local_addr()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("verify-endpoint".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let router = Router::new()
                    .route("/verify", get(verify_only))
                    .with_state(tokens);
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, router).await;
                }
            });
        })?;
    Ok(url)
}

/// The verify-only endpoint in a process of its own, as Twofold is: the load generator then
/// reaches both through the same loopback between two processes, with the same context
/// switches between address spaces. (Inside the benchmark's process the endpoint shares the
/// load generator's address space, and its switches are cheaper: see `test_token_curve`.)
pub struct VerifyProcess {
    pub url: String,
    _child: tokio::process::Child,
}

/// Starts `twofold-bench verify-endpoint` with the key in `key_file`; it is killed when the
/// returned value is dropped.
pub async fn spawn_verify_endpoint(key_file: &Path) -> anyhow::Result<VerifyProcess> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("verify-endpoint")
        .arg("--key-file")
        .arg(key_file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the verify-only endpoint's process")?;
    let stdout = child.stdout.take().context("the endpoint's stdout")?;
    let mut url = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut url),
    )
    .await
    .context("the verify-only endpoint did not say where it listens")??;
    let url = url.trim().to_owned();
    anyhow::ensure!(
        url.starts_with("http://"),
        "the verify-only endpoint said {url:?}"
    );
    Ok(VerifyProcess { url, _child: child })
}

/// The body of `twofold-bench verify-endpoint`: serves the verify-only endpoint for the key
/// in `key_file` on as many runtime threads as Twofold has, prints its URL and serves until
/// killed.
pub async fn serve_verify_endpoint(key_file: &Path, threads: usize) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let url = start_verify_endpoint(token_service(&pem)?, threads)?;
    // The parent reads this one line (the lint forbids stray prints; this is the protocol).
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{url}")?;
    stdout.flush()?;
    drop(stdout);
    std::future::pending::<()>().await;
    Ok(())
}

/// The smallest aggregate: a counter, for the raw cost of one cqrs-es command.
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Incremented {
    by: u64,
}

impl DomainEvent for Incremented {
    fn event_type(&self) -> String {
        "Incremented".to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "BenchCounter";
    type Command = u64;
    type Event = Incremented;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, by: u64, _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
        sink.write(Incremented { by }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Incremented) {
        self.value += event.by;
    }
}

/// Tables of the raw command store, beside Twofold's in the same database, shaped like them.
const RAW_TABLES: &str = "
CREATE TABLE IF NOT EXISTS bench_raw_events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
    event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE IF NOT EXISTS bench_raw_snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id));
";

/// Raw cqrs-es commands (load the aggregate, handle, append one event) on `pool`, by
/// `concurrency` workers; each worker moves to a fresh aggregate every 10 commands, so the
/// histories stay as short as a refreshing user's tail after a snapshot.
pub async fn raw_commands(pool: &PgPool, concurrency: usize, until: Until) -> anyhow::Result<Run> {
    sqlx::raw_sql(RAW_TABLES).execute(pool).await?;
    let repository = PostgresEventRepository::new(pool.clone())
        .with_tables("bench_raw_events", "bench_raw_snapshots");
    let store = PersistedEventStore::<_, Counter>::new_event_store(repository);
    let cqrs = Arc::new(CqrsFramework::new(store, vec![], ()));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    Ok(drive(
        concurrency,
        until,
        request(move |worker, n| {
            let cqrs = Arc::clone(&cqrs);
            let id = format!("{run_id}-{worker}-{}", n / 10);
            async move {
                cqrs.execute(&id, 1)
                    .await
                    .map(|()| 200)
                    .map_err(|error| anyhow::anyhow!("{error}"))
            }
        }),
    )
    .await)
}

/// Reads every row of the events table, decoding its JSON payload: events per second and the
/// number of events. In no order, so that Postgres reads the table as it lies, the cheapest way
/// to read it all.
pub async fn scan_events(pool: &PgPool) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let mut rows =
        sqlx::query("SELECT aggregate_id, sequence, event_type, payload, metadata FROM events")
            .fetch(pool);
    let mut count = 0usize;
    while let Some(row) = rows.try_next().await? {
        let payload: serde_json::Value = row.try_get("payload")?;
        if !payload.is_null() {
            count += 1;
        }
    }
    Ok((count as f64 / start.elapsed().as_secs_f64(), count))
}

/// Latencies of `count` JetStream publishes, each awaited until acknowledged, of a mail-sized
/// message into a stream of its own (deleted afterwards).
pub async fn publish_acks(nats_url: &str, prefix: &str, count: usize) -> anyhow::Result<Stats> {
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = format!("{prefix}-bench-acks");
    let subject = format!("{prefix}.bench.acks");
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(|error| anyhow::anyhow!("creating the stream: {error}"))?;
    let body = bytes_of_mail();
    let mut millis = Vec::with_capacity(count);
    for _ in 0..count {
        let sent = Instant::now();
        jetstream
            .publish(subject.clone(), body.clone().into())
            .await
            .map_err(|error| anyhow::anyhow!("publishing: {error}"))?
            .await
            .map_err(|error| anyhow::anyhow!("waiting for the ack: {error}"))?;
        millis.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    jetstream
        .delete_stream(&stream)
        .await
        .map_err(|error| anyhow::anyhow!("deleting the stream: {error}"))
        .context("cleaning up")?;
    Ok(Stats::of(&millis))
}

/// About the size of a sealed mail job.
fn bytes_of_mail() -> Vec<u8> {
    vec![b'x'; 1024]
}
