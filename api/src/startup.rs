//! The composition root: concrete adapters wired to the domain's ports, the store chosen from
//! configuration, and the HTTP server.

use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use twofold_domain::UserServices;
use twofold_mailer::Sender;
use twofold_nats::{MailJob, MailSealer, OutboxRelay};
use twofold_projections::chain::{self, ChainKey};
use twofold_projections::log::{EventLog, PgEventLog};
use twofold_projections::personal::PersonalData;
use twofold_projections::{
    CheckpointStore, CommitQuery, Follower, MemCheckpointStore, MemUserDirectory, MemViewStore,
    PgCheckpointStore, PgUserDirectory, PgViewStore, Projection, Projector, SessionsView,
    UserDirectory, UserView, ViewStore, SESSION_VIEW_TABLE, USER_VIEW_TABLE, VIEWS_PROJECTOR,
};

use crate::adapters::{Argon2Hasher, OsRandomness, SystemClock, XChaChaSealer};
use crate::app::access::{AccessCache, DropsAccess};
use crate::app::client_limit::{ClientLimiter, MemClientLimiter, PgClientLimiter, SWEEP_PERIOD};
use crate::app::gateway::{CommandGateway, Users};
use crate::app::mail::{InProcessMailQueue, MailFactory, MailQueue, OutboxMailQueue};
use crate::app::mail_policy::MailPolicy;
use crate::app::passkeys::Passkeys;
use crate::app::store::ceremonies::CEREMONY_SWEEP_PERIOD;
use crate::app::store::{
    CeremonyStore, MemCeremonyStore, MemEventRepository, PgCeremonyStore, PgEventRepository,
};
use crate::app::unknown_accounts::{
    MemUnknownAccountThrottle, PgUnknownAccountThrottle, UnknownAccountThrottle,
};
use crate::app::views::{upcasters, ViewSet};
use crate::app::{App, Parts, Settings};
use crate::config::{Checked, Config, ConfigProblems, Keys};
use crate::http::deadline::DeadlineLayer;
use crate::http::hygiene;
use crate::http::jwt::TokenService;
use crate::http::rate_limit::ClientRateLimit;
use crate::http::state::AppState;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::telemetry::{MakeRandomRequestId, REQUEST_ID_HEADER};

/// Largest request body accepted; every Twofold request is a few hundred bytes.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A built service, bound to its port and ready to run.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    app: Arc<App>,
    relay: Option<OutboxRelay>,
    projector: Projector,
    shutdown_timeout: Duration,
    limits: crate::serve::Limits,
}

/// The domain's ports with their production adapters.
pub fn services(config: &Config, keys: &Keys) -> anyhow::Result<(UserServices, Arc<Argon2Hasher>)> {
    let workers = config
        .argon2
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let hasher = Arc::new(
        Argon2Hasher::start(
            config.argon2.params(),
            workers,
            config.argon2.queue,
            config.argon2.nice,
        )
        .map_err(|error| anyhow::anyhow!("TWOFOLD_ARGON2_*: {error}"))?,
    );
    let services = UserServices {
        hasher: hasher.clone(),
        sealer: Arc::new(XChaChaSealer::new(&keys.sealing, &keys.retired_sealing)),
        clock: Arc::new(SystemClock),
        rng: Arc::new(OsRandomness),
    };
    Ok((services, hasher))
}

/// Chains, once, the events stored before the event chain existed, with the current sealing
/// key's chain key: before anything appends to them (see `twofold_projections::chain`).
pub async fn chain_older_events(pool: &PgPool, keys: &Keys) -> anyhow::Result<()> {
    let chained = chain::chain_events_from_before_the_chain(pool, &keys.sealing.chain_key())
        .await
        .context("chaining the events stored before the event chain existed failed")?;
    if chained > 0 {
        tracing::info!(
            events = chained,
            "events stored before the event chain are now chained"
        );
    }
    Ok(())
}

/// Rewrites the address reservations stored in clear (before addresses were indexed by keyed
/// digest) into digests under the current sealing key, once.
pub async fn index_addresses_by_digest(pool: &PgPool, keys: &Keys) -> anyhow::Result<()> {
    let sealer = XChaChaSealer::new(&keys.sealing, &keys.retired_sealing);
    let indexed = PgEventRepository::index_clear_addresses(pool, &sealer)
        .await
        .context("indexing the addresses stored in clear by their keyed digest failed")?;
    if indexed > 0 {
        tracing::info!(
            addresses = indexed,
            "address reservations stored in clear are now keyed by digest"
        );
    }
    Ok(())
}

/// Seals, once, the personal data of the events stored before per-user keys (see
/// [`PgEventRepository::seal_older_personal_data`]).
pub async fn seal_older_personal_data(pool: &PgPool, keys: &Keys) -> anyhow::Result<()> {
    let sealer = XChaChaSealer::new(&keys.sealing, &keys.retired_sealing);
    let sealed =
        PgEventRepository::seal_older_personal_data(pool, &sealer, &keys.sealing.chain_key())
            .await
            .context("sealing the personal data of events stored in clear failed")?;
    if sealed.users > 0 {
        tracing::warn!(
            users = sealed.users,
            events = sealed.events_rewritten,
            "events stored before per-user keys had their personal data sealed and were chained \
             again: a head saved before (audit verify --head-in) reports these users as rewritten"
        );
    }
    Ok(())
}

/// Connects to Postgres and applies the migrations.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = open_pool(database_url, max_connections)
        .await
        .map_err(anyhow::Error::msg)?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Connects to Postgres, with a message naming where (never the credentials) if it cannot.
async fn open_pool(database_url: &str, max_connections: u32) -> Result<PgPool, String> {
    use sqlx::Connection;
    let target = crate::config::database_target(database_url)?;
    let unreachable = |reason: &dyn std::fmt::Display| {
        format!("DATABASE_URL: cannot connect to Postgres at {target}: {reason}")
    };
    // One plain connection first: a pool retries until its timeout and then reports only that,
    // where this reports the cause (refused, unknown host, authentication failed, …).
    let probe = sqlx::PgConnection::connect(database_url);
    match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
        Err(_) => return Err(unreachable(&"no answer within 5 seconds")),
        Ok(Err(error)) if crate::config::database::is_missing_database(&error) => {
            let name = crate::config::database::create(database_url)
                .await
                .map_err(|reason| format!("DATABASE_URL: {reason}"))?;
            tracing::info!(database = %name, "the database did not exist: created it");
        }
        Ok(Err(error)) => return Err(unreachable(&error)),
        Ok(Ok(probe)) => {
            let _closed = probe.close().await;
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(database_url)
        .await
        .map_err(|error| unreachable(&error))
}

/// How long connecting to Postgres may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle for longer than this is pinged before it is handed out, and
/// replaced if the ping fails: after a quiet spell, connections that a restart or a proxy
/// closed meanwhile are found before a request meets them. One used more recently is handed
/// out at once.
///
/// sqlx's default pings every connection it hands out: one round trip more per statement, so
/// a refresh made 9 round trips instead of 6 and cost Postgres about 15% more CPU (issue 15's
/// probe). Without the ping, a connection that died a moment after its last use fails its
/// statement with an I/O error, answered 503 with `Retry-After`; one that hangs is bounded by
/// the request deadline ([`crate::http::deadline`]). HikariCP makes the same trade
/// (`aliveBypassWindowMs`).
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying the database migrations failed")
}

/// Validates `config` and, when it names a database, connects to it: every problem is
/// collected, so that one failed start names them all.
pub async fn validate(config: &Config) -> Result<(Checked, Option<PgPool>), ConfigProblems> {
    let checked = config.check();
    let target_ok = config
        .database
        .url
        .as_ref()
        .is_some_and(|url| crate::config::database_target(url.expose_secret()).is_ok());
    let pool = match &config.database.url {
        Some(url) if target_ok => {
            Some(open_pool(url.expose_secret(), config.database.pool_size).await)
        }
        _ => None,
    };
    match (checked, pool) {
        (Ok(checked), None) => Ok((checked, None)),
        (Ok(checked), Some(Ok(pool))) => Ok((checked, Some(pool))),
        (Ok(_), Some(Err(unreachable))) => Err(ConfigProblems(vec![unreachable])),
        (Err(mut problems), pool) => {
            if let Some(Err(unreachable)) = pool {
                problems.0.push(unreachable);
            }
            Err(problems)
        }
    }
}

/// Where events (and the mail jobs committed with them) are stored.
pub enum Store {
    /// Postgres: events, views and the mail outbox.
    Postgres(PgPool),
    /// Memory: committed mail jobs go to this in-process queue.
    Memory(tokio::sync::mpsc::UnboundedSender<MailJob>),
}

/// The settings of the use cases, from `config`.
pub fn settings(config: &Config) -> Settings {
    Settings {
        totp_issuer: config.accounts.totp_issuer.clone(),
        backup_codes: config.accounts.backup_codes,
        signup_existing_email: config.accounts.signup_existing_email,
        refresh_reuse_grace: time::Duration::seconds(
            i64::try_from(config.lifetimes.refresh_reuse_grace).unwrap_or(i64::MAX),
        ),
        reauth_window: time::Duration::seconds(
            i64::try_from(config.lifetimes.reauth_window).unwrap_or(i64::MAX),
        ),
        // Checked at start-up (`Config::check`).
        admin_emails: config.admin_emails().unwrap_or_default(),
        recent_users_ttl: std::time::Duration::from_secs(config.database.recent_users_ttl),
    }
}

/// What the use cases run on besides their store.
pub struct Adapters {
    /// The domain's ports.
    pub services: UserServices,
    /// The password hasher (also behind `services`).
    pub hasher: Arc<Argon2Hasher>,
    /// Seals the secrets in mail jobs.
    pub mail_sealer: MailSealer,
    /// Queues the emails no command causes.
    pub mail_queue: Arc<dyn MailQueue>,
    /// Chains the events the Postgres store writes (tamper evidence).
    pub chain_key: Arc<ChainKey>,
    /// The WebAuthn relying party.
    pub webauthn: Arc<webauthn_rs::prelude::Webauthn>,
}

/// The projections of both views over `log`, kept in `users` and `sessions`: the gateway
/// dispatches to them after each commit and the projector follows the log into them.
fn projections(
    log: &Arc<dyn EventLog>,
    users: Arc<dyn ViewStore<UserView>>,
    sessions: Arc<dyn ViewStore<SessionsView>>,
    checkpoints: Arc<dyn CheckpointStore>,
) -> (Vec<Box<dyn CommitQuery>>, Projector) {
    let users = Projection::new(users, Arc::clone(log), upcasters());
    let sessions = Projection::new(sessions, Arc::clone(log), upcasters());
    let followers: Vec<Arc<dyn Follower>> =
        vec![Arc::new(users.clone()), Arc::new(sessions.clone())];
    let projector = Projector::new(
        VIEWS_PROJECTOR,
        Arc::clone(log),
        checkpoints,
        followers,
        upcasters(),
    );
    (vec![Box::new(users), Box::new(sessions)], projector)
}

/// The use cases over `store`, recording command latency, logins and lockouts into `metrics`.
pub fn app(store: &Store, adapters: Adapters, settings: Settings, metrics: &Metrics) -> Arc<App> {
    composed(store, adapters, settings, metrics).0
}

/// What a store gives the use cases.
struct StoreParts {
    users: Arc<dyn Users>,
    directory: Arc<dyn UserDirectory>,
    access: Arc<AccessCache>,
    unknown_accounts: Arc<dyn UnknownAccountThrottle>,
    projector: Projector,
    views: ViewSet,
    log: Arc<dyn EventLog>,
    ceremonies: Arc<dyn CeremonyStore>,
}

/// The use cases over `store`, and the projector that keeps their views following the log.
fn composed(
    store: &Store,
    adapters: Adapters,
    settings: Settings,
    metrics: &Metrics,
) -> (Arc<App>, Projector) {
    let policy = || MailPolicy::new(MailFactory::new(adapters.mail_sealer.clone()));
    let services = adapters.services.clone();
    let stored = match store {
        Store::Postgres(pool) => {
            let repository = PgEventRepository::new(
                pool.clone(),
                Arc::clone(&adapters.chain_key),
                Arc::clone(&services.sealer),
            );
            let personal: Arc<dyn PersonalData> = Arc::new(repository.clone());
            let log: Arc<dyn EventLog> =
                Arc::new(PgEventLog::new(pool.clone()).with_personal_data(Arc::clone(&personal)));
            let directory: Arc<dyn UserDirectory> = Arc::new(PgUserDirectory::new(pool.clone()));
            let access = Arc::new(AccessCache::new(Arc::clone(&directory)));
            let (mut queries, projector) = projections(
                &log,
                Arc::new(PgViewStore::new(pool.clone(), USER_VIEW_TABLE)),
                Arc::new(PgViewStore::new(pool.clone(), SESSION_VIEW_TABLE).changed_in_place()),
                Arc::new(PgCheckpointStore::new(pool.clone())),
            );
            queries.push(Box::new(DropsAccess(Arc::clone(&access))));
            let gateway = CommandGateway::new(repository, policy(), queries, services)
                .with_recent_users_for(settings.recent_users_ttl)
                .with_metrics(metrics.clone());
            StoreParts {
                users: Arc::new(gateway),
                directory,
                access,
                unknown_accounts: Arc::new(PgUnknownAccountThrottle::new(pool.clone())),
                projector,
                views: ViewSet::Postgres {
                    pool: pool.clone(),
                    personal,
                },
                log,
                ceremonies: PgCeremonyStore::start(pool.clone(), CEREMONY_SWEEP_PERIOD),
            }
        }
        Store::Memory(outbox) => {
            let events = MemEventRepository::new(outbox.clone(), Arc::clone(&services.sealer))
                .with_metrics(metrics.clone());
            let log: Arc<dyn EventLog> = Arc::new(events.clone());
            let views = Arc::new(MemViewStore::<UserView>::default());
            let sessions = Arc::new(MemViewStore::<SessionsView>::default());
            let directory: Arc<dyn UserDirectory> = Arc::new(MemUserDirectory::new(
                Arc::clone(&views),
                Arc::clone(&sessions),
            ));
            let access = Arc::new(AccessCache::new(Arc::clone(&directory)));
            let (mut queries, projector) = projections(
                &log,
                Arc::clone(&views) as _,
                Arc::clone(&sessions) as _,
                Arc::new(MemCheckpointStore::default()),
            );
            queries.push(Box::new(DropsAccess(Arc::clone(&access))));
            let gateway = CommandGateway::new(events, policy(), queries, services)
                .with_recent_users_for(settings.recent_users_ttl)
                .with_metrics(metrics.clone());
            StoreParts {
                users: Arc::new(gateway),
                directory,
                access,
                unknown_accounts: Arc::new(MemUnknownAccountThrottle::default()),
                projector,
                views: ViewSet::Memory {
                    log: Arc::clone(&log),
                    users: views,
                    sessions,
                },
                log,
                ceremonies: MemCeremonyStore::start(CEREMONY_SWEEP_PERIOD),
            }
        }
    };
    let parts = Parts {
        users: stored.users,
        directory: stored.directory,
        access: stored.access,
        unknown_accounts: stored.unknown_accounts,
        mail: MailFactory::new(adapters.mail_sealer),
        mail_queue: adapters.mail_queue,
        services: adapters.services,
        hasher: adapters.hasher,
        metrics: metrics.clone(),
        views: stored.views,
        log: stored.log,
        passkeys: Passkeys {
            webauthn: adapters.webauthn,
            ceremonies: stored.ceremonies,
        },
    };
    (Arc::new(App::new(parts, settings)), stored.projector)
}

/// The mail path the configuration names, and the store it goes with.
struct MailPath {
    store: Store,
    queue: Arc<dyn MailQueue>,
    relay: Option<OutboxRelay>,
    readiness: Readiness,
}

async fn mail_path(
    config: &Config,
    keys: &Keys,
    pool: Option<PgPool>,
    metrics: &Metrics,
) -> anyhow::Result<MailPath> {
    match pool {
        Some(pool) => {
            migrate(&pool).await?;
            chain_older_events(&pool, keys).await?;
            seal_older_personal_data(&pool, keys).await?;
            index_addresses_by_digest(&pool, keys).await?;
            let nats_url = config
                .nats
                .url
                .as_ref()
                .context("with DATABASE_URL set, NATS_URL must be set too")?;
            let topology = config.nats.topology().map_err(anyhow::Error::msg)?;
            // Start even while NATS is down: jobs wait in the outbox until it is back.
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(nats_url.expose_secret())
                .await
                .context("NATS_URL is not a valid NATS address")?;
            let jetstream = async_nats::jetstream::new(client.clone());
            let relay = OutboxRelay::new(pool.clone(), jetstream.clone(), topology.clone())
                .with_recorder(metrics.recorder());
            let queue = OutboxMailQueue::new(pool.clone(), jetstream.clone(), topology);
            Ok(MailPath {
                readiness: Readiness::Services {
                    pool: pool.clone(),
                    nats: client,
                },
                store: Store::Postgres(pool),
                queue: Arc::new(queue),
                relay: Some(relay),
            })
        }
        None => {
            let transport = config.mail.transport().context("TWOFOLD_MAIL_TRANSPORT")?;
            let sender = Sender::new(&transport, &config.mail.from).context("TWOFOLD_MAIL_FROM")?;
            let (queue, outbox) =
                InProcessMailQueue::start(sender, keys.sealing.mail_sealer(), metrics.clone());
            Ok(MailPath {
                store: Store::Memory(outbox),
                queue: Arc::new(queue),
                relay: None,
                readiness: Readiness::Embedded,
            })
        }
    }
}

const EMBEDDED_WARNING: &str = "
################################################################################
#  EMBEDDED IN-MEMORY MODE                                                     #
#  No DATABASE_URL is set, so every user and event lives in this process's     #
#  memory and is LOST when it stops. The JWT signing key and the sealing key   #
#  were generated at start-up: tokens and 2FA enrolments die with the process. #
#  For real use set DATABASE_URL, TWOFOLD_JWT_KEY_FILE and TWOFOLD_SEALING_KEY.#
################################################################################";

impl Application {
    /// Validates `config` (see [`validate`]), wires the service and binds its port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (checked, pool) = validate(&config).await?;
        // Before anything is logged: a port in use is a configuration problem like the others.
        let socket =
            reserve_port(config.http.addr).map_err(|problem| ConfigProblems(vec![problem]))?;
        let Checked {
            keys,
            lifetimes,
            cors_origins,
            trusted_proxies,
            webauthn,
        } = checked;
        if keys.ephemeral {
            tracing::warn!("{EMBEDDED_WARNING}");
        }
        tracing::info!(config = ?config, "starting");
        let (services, hasher) = services(&config, &keys)?;
        let metrics = Metrics::new();
        let mail = mail_path(&config, &keys, pool, &metrics).await?;
        let sealer = Arc::clone(&services.sealer);
        let adapters = Adapters {
            services,
            hasher,
            mail_sealer: keys.sealing.mail_sealer(),
            chain_key: Arc::new(keys.sealing.chain_key()),
            mail_queue: mail.queue,
            webauthn,
        };
        let (app, projector) = composed(&mail.store, adapters, settings(&config), &metrics);
        app.grant_configured_admins()
            .await
            .context("granting the admin role of TWOFOLD_ADMIN_EMAILS failed")?;
        let tokens = TokenService::new(
            keys.jwt,
            config.jwt.issuer.clone(),
            config.jwt.audience.clone(),
            lifetimes,
        )
        .with_retired_keys(keys.retired_jwt);
        let state = AppState {
            app: Arc::clone(&app),
            tokens: Arc::new(tokens),
            metrics: metrics.clone(),
            readiness: mail.readiness,
        };
        let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
        let router = crate::http::routes::router()
            .route_layer(crate::metrics::MarkRouteLayer)
            .with_state(state)
            .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
            .layer(RequestBodyTimeoutLayer::new(
                config.http.connections.body_read_timeout(),
            ));
        #[cfg(feature = "test-routes")]
        let router = router.merge(test_routes());
        let mut router = router;
        if let Some(per_minute) = NonZeroU32::new(config.http.ip_rate_limit) {
            let limiter: Arc<dyn ClientLimiter> = match &mail.store {
                Store::Postgres(pool) => PgClientLimiter::start(
                    pool.clone(),
                    Arc::clone(&sealer),
                    per_minute,
                    SWEEP_PERIOD,
                ),
                Store::Memory(_) => MemClientLimiter::start(per_minute, SWEEP_PERIOD),
            };
            router = router.layer(axum::middleware::from_fn_with_state(
                ClientRateLimit::new(limiter, trusted_proxies),
                crate::http::rate_limit::limit,
            ));
        }
        // The layers every request goes through, outermost first, as one layer of the router:
        // each layer of a router boxes the service below it, and every request cloned that
        // whole chain once per layer. Panics are caught inside the hygiene headers and the
        // request span, so a panic's answer gets both.
        let router = router.layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    request_id.clone(),
                    MakeRandomRequestId,
                ))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let request_id = request
                            .headers()
                            .get(REQUEST_ID_HEADER)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(hygiene::HygieneLayer::new(metrics))
                .option_layer(hygiene::cors(&cors_origins))
                .layer(CatchPanicLayer::custom(answer_panic))
                .layer(DeadlineLayer::new(
                    config.http.connections.request_timeout(),
                )),
        );
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("TWOFOLD_ADDR: cannot listen on {}", config.http.addr))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        Ok(Self {
            listener,
            router,
            app,
            relay: mail.relay,
            projector,
            shutdown_timeout: Duration::from_secs(config.http.shutdown_timeout),
            limits: config.http.connections.limits(config.database.pool_size),
        })
    }

    /// The port the service listens on.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map_or(0, |address| address.port())
    }

    /// Serves until SIGINT or SIGTERM, within the connection limits of [`crate::serve`]. Then
    /// it stops accepting connections, drops those with no request in progress (half-sent
    /// requests too), lets the requests in progress finish for at most the shutdown timeout
    /// (`TWOFOLD_SHUTDOWN_TIMEOUT`), and
    /// stops the outbox relay after a last drain; rows it could not relay stay in the outbox
    /// for the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = self.relay.map(|relay| {
            tokio::spawn(relay.run_until(async move {
                let _ = relay_stopped.await;
            }))
        });
        let (stop_projector, projector_stopped) = tokio::sync::oneshot::channel::<()>();
        let projector = tokio::spawn(self.projector.run_until(async move {
            let _ = projector_stopped.await;
        }));
        let signal = async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        };
        let server = crate::serve::serve(self.listener, self.router, self.limits, signal);
        let timeout = self.shutdown_timeout;
        let deadline = async {
            let _ = stopped.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(timeout).await;
        };
        let served = tokio::select! {
            served = server => served,
            () = deadline => {
                tracing::warn!(timeout_seconds = timeout.as_secs(),
                    "shutdown timeout reached: requests still in flight are cut off");
                Ok(())
            }
        };
        // A pass of the projector in progress is dropped: it is idempotent, and the next start
        // resumes from the stored checkpoint.
        let _ = stop_projector.send(());
        let _ = projector.await;
        // Work the last requests started in the background (a reset email) may finish; only
        // then does the relay stop, so that their emails go too.
        self.app
            .finish_background_work(BACKGROUND_STOP_TIMEOUT)
            .await;
        let _ = stop_relay.send(());
        if let Some(relay) = relay {
            // The relay finishes its batch and drains once more; a NATS or Postgres that hangs
            // must not hold the process, and an interrupted batch is only re-published
            // (deduplicated by JetStream) at the next start.
            let abort = relay.abort_handle();
            if tokio::time::timeout(RELAY_STOP_TIMEOUT, relay)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!("stopped");
        served
    }
}

/// The answer to a handler that panicked: a 500 problem+json like any internal error, with
/// the panic logged (in the request's span, so with its request id). The connection stays up.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    let error =
        crate::http::error::ApiError::Internal(format!("a handler panicked: {message}").into());
    axum::response::IntoResponse::into_response(error)
}

/// Routes the integration tests call and a release build never has (feature `test-routes`).
#[cfg(feature = "test-routes")]
fn test_routes() -> Router {
    // A handler that panics, as a bug would: the tests check what the client and the log see.
    #[allow(clippy::panic, reason = "the route exists to panic")]
    async fn panics() -> &'static str {
        panic!("a handler panicked on purpose")
    }
    Router::new().route(TEST_PANIC_PATH, axum::routing::get(panics))
}

/// The path of the test route that panics (feature `test-routes`).
#[cfg(feature = "test-routes")]
pub const TEST_PANIC_PATH: &str = "/__tests/panic";

/// Connections the kernel queues before they are accepted (as `TcpListener::bind` sets).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` without listening yet: a port in use is found before start-up does any work,
/// and nothing connects before the service can answer.
fn reserve_port(addr: SocketAddr) -> Result<tokio::net::TcpSocket, String> {
    let cannot = |error: std::io::Error| format!("TWOFOLD_ADDR: cannot listen on {addr}: {error}");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(cannot)?;
    // As `TcpListener::bind` does: a restart may reuse the port of connections in TIME_WAIT,
    // never one another process listens on.
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(cannot)?;
    socket.bind(addr).map_err(cannot)?;
    Ok(socket)
}

/// How long work started in the background (a password reset) may take once the server has
/// stopped.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the outbox relay may take to finish its batch once the server has stopped.
const RELAY_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
