//! Closed-loop load: a fixed number of workers, each sending its next request as soon as the
//! last one answered, for a fixed time or a fixed number of requests; and the statistics of
//! what came back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One request of a worker: its index and its request number; the answer's status.
pub type Request = Arc<
    dyn Fn(usize, usize) -> Pin<Box<dyn Future<Output = anyhow::Result<u16>> + Send>> + Send + Sync,
>;

/// Wraps an async closure as a [`Request`].
pub fn request<F, Fut>(f: F) -> Request
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u16>> + Send + 'static,
{
    Arc::new(move |worker, n| Box::pin(f(worker, n)))
}

/// How long a worker waits after a 503 before its next request: the `Retry-After` (1 s)
/// Twofold sends with `service.busy`.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long (requests under way then still finish and count).
    Elapsed(Duration),
    /// After this many requests in all.
    Count(usize),
}

/// What one run saw.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Latencies of successful (2xx) answers, ms.
    pub ok_ms: Vec<f64>,
    /// Latencies of 503 answers, ms.
    pub busy_ms: Vec<f64>,
    /// Other statuses and transport errors.
    pub other: usize,
    /// The first unexpected status or error, to show.
    pub first_other: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Run {
    /// Successful answers per second.
    pub fn rate(&self) -> f64 {
        self.ok_ms.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency statistics of the successful answers.
    pub fn ok(&self) -> Stats {
        Stats::of(&self.ok_ms)
    }

    /// Latency statistics of the 503 answers.
    pub fn busy(&self) -> Stats {
        Stats::of(&self.busy_ms)
    }
}

/// Count and quantiles of latencies in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            n: sorted.len(),
            p50: quantile(&sorted, 0.5),
            p90: quantile(&sorted, 0.9),
            p99: quantile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The `q` quantile of sorted values (nearest rank, interpolated).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let rank = q * last as f64;
    let low = rank.floor() as usize;
    let high = (low + 1).min(last);
    match (sorted.get(low), sorted.get(high)) {
        (Some(a), Some(b)) => a + (b - a) * (rank - low as f64),
        _ => f64::NAN,
    }
}

/// Runs `concurrency` workers sending `request` until `until`.
pub async fn drive(concurrency: usize, until: Until, request: Request) -> Run {
    let start = Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let request = Arc::clone(&request);
        let issued = Arc::clone(&issued);
        workers.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut n = 0;
            loop {
                match until {
                    Until::Elapsed(duration) if start.elapsed() >= duration => break,
                    Until::Count(count) if issued.fetch_add(1, Ordering::Relaxed) >= count => break,
                    _ => {}
                }
                let sent = Instant::now();
                let outcome = request(worker, n).await;
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                n += 1;
                match outcome {
                    Ok(status) if (200..300).contains(&status) => run.ok_ms.push(ms),
                    Ok(503) => {
                        run.busy_ms.push(ms);
                        // A client that honours Retry-After waits before trying again; the
                        // wait is not part of the answer's latency.
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    Ok(status) => {
                        run.other += 1;
                        run.first_other.get_or_insert(format!("status {status}"));
                    }
                    Err(error) => {
                        run.other += 1;
                        run.first_other.get_or_insert(format!("{error:#}"));
                    }
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for worker in workers {
        if let Ok(run) = worker.await {
            total.ok_ms.extend(run.ok_ms);
            total.busy_ms.extend(run.busy_ms);
            total.other += run.other;
            if total.first_other.is_none() {
                total.first_other = run.first_other;
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}
