//! Starting Twofold as its operators do: the `twofold` and `twofold-mailer` release binaries,
//! as child processes (so that their memory can be read on their own), either embedded or on a
//! fresh Postgres database and a unique NATS prefix, both removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use twofold_api::adapters::{Argon2Params, SealingKey};
use twofold_api::http::jwt::JwtKey;
use uuid::Uuid;

/// Which store Twofold runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The in-memory store, no NATS, mail sent by the API itself.
    Embedded,
    /// Postgres, the outbox relay and NATS JetStream, and the mailer process.
    Postgres,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Postgres => "postgres",
        }
    }
}

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The Postgres server, without a database name.
    pub database_url: String,
    pub nats_url: String,
    /// The folder holding the `twofold` and `twofold-mailer` binaries.
    pub bin_dir: PathBuf,
}

/// One running Twofold.
pub struct Stack {
    pub mode: Mode,
    pub base: String,
    pub api: Child,
    /// The API's environment but its address, for [`Stack::another_instance`].
    api_env: Vec<(&'static str, String)>,
    pub mailer: Option<Child>,
    /// The JWT signing key the API uses (PKCS#8 PEM), and its file.
    pub jwt_key_pem: String,
    pub jwt_key_file: PathBuf,
    /// The sealing key the API uses (base64).
    pub sealing_key: String,
    /// The database and pool of the Postgres mode.
    pub database: Option<(String, PgPool)>,
    pub database_url: Option<String>,
    pub nats_prefix: String,
    pub work_dir: PathBuf,
    servers: Servers,
}

/// A free local port (bound, read and released: another process could take it in between,
/// which start-up would then report).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Stack {
    /// Starts Twofold in `mode`, mail going to the SMTP sink on `smtp_port`, keeping users
    /// after a command for `recent_users_ttl` seconds (the service's default if `None`), and
    /// waits until it is ready.
    pub async fn start(
        mode: Mode,
        servers: &Servers,
        argon2: Argon2Params,
        smtp_port: u16,
        recent_users_ttl: Option<u64>,
    ) -> anyhow::Result<Self> {
        let tag = Uuid::new_v4().simple().to_string();
        let work_dir = std::env::temp_dir().join(format!("twofold-bench-{tag}"));
        std::fs::create_dir_all(&work_dir)?;
        let jwt_key_pem = JwtKey::generate_pem()
            .map_err(anyhow::Error::msg)?
            .to_string();
        let key_file = work_dir.join("jwt.pem");
        std::fs::write(&key_file, jwt_key_pem.as_bytes())?;
        let sealing = SealingKey::generate();
        let sealing_key = sealing.to_base64();
        let mail_key = sealing.mail_key().to_base64();
        let nats_prefix = format!("bench{}", &tag[..12]);
        let port = free_port()?;
        let transport = format!("smtp://127.0.0.1:{smtp_port}");

        let (database, database_url) = match mode {
            Mode::Embedded => (None, None),
            Mode::Postgres => {
                let name = format!("twofold_bench_{}", &tag[..16]);
                let mut admin =
                    PgConnection::connect(&format!("{}/postgres", servers.database_url))
                        .await
                        .context("Postgres is not reachable")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                let url = format!("{}/{name}", servers.database_url);
                (Some(name), Some(url))
            }
        };

        let mut api_env = vec![
            ("TWOFOLD_ENV", "development".to_owned()),
            ("TWOFOLD_JWT_KEY_FILE", key_file.display().to_string()),
            ("TWOFOLD_SEALING_KEY", sealing_key.clone()),
            ("TWOFOLD_NATS_PREFIX", nats_prefix.clone()),
            ("TWOFOLD_MAIL_TRANSPORT", transport.clone()),
            // The per-client limit would answer 429 to a benchmark from one address.
            ("TWOFOLD_IP_RATE_LIMIT", "0".to_owned()),
            ("TWOFOLD_ARGON2_MEMORY_KIB", argon2.memory_kib.to_string()),
            ("TWOFOLD_ARGON2_ITERATIONS", argon2.iterations.to_string()),
            ("TWOFOLD_ARGON2_PARALLELISM", argon2.parallelism.to_string()),
            ("TWOFOLD_LOG_FORMAT", "json".to_owned()),
        ];
        if let Some(seconds) = recent_users_ttl {
            api_env.push(("TWOFOLD_RECENT_USERS_TTL", seconds.to_string()));
        }
        if let Some(url) = &database_url {
            api_env.push(("DATABASE_URL", url.clone()));
            api_env.push(("NATS_URL", servers.nats_url.clone()));
        }
        let api = spawn_api(&servers.bin_dir, &api_env, port, &work_dir.join("api.log"))?;

        let mailer = match mode {
            Mode::Embedded => None,
            Mode::Postgres => {
                let mut mailer = Command::new(servers.bin_dir.join("twofold-mailer"));
                mailer
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("NATS_URL", &servers.nats_url)
                    .env("TWOFOLD_NATS_PREFIX", &nats_prefix)
                    .env("TWOFOLD_MAIL_KEY", mail_key.as_str())
                    .env("TWOFOLD_MAIL_TRANSPORT", &transport)
                    .env("TWOFOLD_LOG_FORMAT", "json");
                Some(spawn(mailer, &work_dir.join("mailer.log"))?)
            }
        };

        let mut stack = Self {
            mode,
            base: format!("http://127.0.0.1:{port}"),
            api,
            api_env,
            mailer,
            jwt_key_pem,
            jwt_key_file: key_file,
            sealing_key: sealing_key.clone(),
            database: None,
            database_url: database_url.clone(),
            nats_prefix,
            work_dir,
            servers: servers.clone(),
        };
        if let Err(error) = wait_ready(&mut stack.api, &stack.base).await {
            let log = std::fs::read_to_string(stack.work_dir.join("api.log")).unwrap_or_default();
            stack.stop().await;
            if let Some(name) = &database {
                let _ = drop_database(&servers.database_url, name).await;
            }
            bail!("{error:#}\nthe API's log:\n{log}");
        }
        if let (Some(name), Some(url)) = (database, database_url) {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(20)
                .connect(&url)
                .await?;
            stack.database = Some((name, pool));
        }
        Ok(stack)
    }

    /// A second API process on this stack's store, with its environment but `changed`, and
    /// waits until it is ready. Postgres only: the embedded store is the process's own.
    pub async fn another_instance(
        &self,
        changed: &[(&'static str, String)],
    ) -> anyhow::Result<Instance> {
        let port = free_port()?;
        let mut env = self.api_env.clone();
        env.retain(|(name, _)| changed.iter().all(|(other, _)| other != name));
        env.extend_from_slice(changed);
        let log = self.work_dir.join(format!("api-{port}.log"));
        let mut process = spawn_api(&self.servers.bin_dir, &env, port, &log)?;
        let base = format!("http://127.0.0.1:{port}");
        if let Err(error) = wait_ready(&mut process, &base).await {
            let _ = process.start_kill();
            let _ = process.wait().await;
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{error:#}\nthe second API's log:\n{log}");
        }
        Ok(Instance { base, process })
    }

    /// The resident memory of the API and of the mailer, in bytes.
    pub fn rss(&self) -> (Option<u64>, Option<u64>) {
        (
            self.api.id().and_then(rss_of),
            self.mailer.as_ref().and_then(Child::id).and_then(rss_of),
        )
    }

    async fn stop(&mut self) {
        for child in std::iter::once(&mut self.api).chain(self.mailer.as_mut()) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops the processes and removes the database, the NATS streams and the folder.
    pub async fn remove(mut self) {
        self.stop().await;
        if let Some((name, pool)) = self.database.take() {
            pool.close().await;
            if let Err(error) = drop_database(&self.servers.database_url, &name).await {
                eprintln!("warning: could not drop database {name}: {error:#}");
            }
            if let Err(error) = delete_nats_prefix(&self.servers.nats_url, &self.nats_prefix).await
            {
                eprintln!(
                    "warning: could not delete NATS prefix {}: {error:#}",
                    self.nats_prefix
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Another API process of a stack ([`Stack::another_instance`]).
pub struct Instance {
    pub base: String,
    process: Child,
}

impl Instance {
    pub async fn stop(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
    }
}

/// `twofold serve` on `port` with `env` and nothing else of the benchmark's environment.
fn spawn_api(
    bin_dir: &Path,
    env: &[(&'static str, String)],
    port: u16,
    log: &Path,
) -> anyhow::Result<Child> {
    let mut api = Command::new(bin_dir.join("twofold"));
    api.arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TWOFOLD_ADDR", format!("127.0.0.1:{port}"))
        .envs(env.iter().map(|(name, value)| (name, value)));
    spawn(api, log)
}

/// Waits until the API `process` at `base` is ready.
async fn wait_ready(process: &mut Child, base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = process.try_wait() {
            bail!("twofold exited at start-up: {status}");
        }
        let ready = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .map(|response| response.status().is_success())
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("twofold was not ready within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {:?}", command.as_std().get_program()))
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    let mut last = None;
    for _ in 0..10 {
        match sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("dropping failed"), Into::into))
}

async fn delete_nats_prefix(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    let topology = twofold_nats::Topology::new(prefix).map_err(anyhow::Error::msg)?;
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_key_value(topology.status_bucket()).await;
    for stream in [topology.stream(), topology.dead_letter_stream()] {
        let _ = jetstream.delete_stream(&stream).await;
    }
    Ok(())
}

/// A configuration on `database_url`, for the in-process view rebuild.
pub fn rebuild_config(stack: &Stack, database_url: &str) -> anyhow::Result<twofold_api::Config> {
    let mut config = twofold_api::Config::for_tests(
        Some(database_url.to_owned()),
        None,
        "bench",
        &stack.work_dir.join("rebuild"),
    )?;
    // The stack's own keys: with others, every sealed field (addresses, names, client
    // addresses) would open as erased and differ from the views.
    config.sealing.key = Some(SecretString::from(stack.sealing_key.clone()));
    config.jwt.key_file = Some(stack.jwt_key_file.clone());
    Ok(config)
}
