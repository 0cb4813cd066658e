//! The `twofold-mailer` binary: reads its settings from the environment, logs to stderr, and
//! sends mail jobs until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use twofold_mailer::{LogFormat, MailerArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let args = MailerArgs::parse();
    init_telemetry(args.log_format);
    if let Some(address) = args.metrics_addr {
        let exporter = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(address)
            .install();
        if let Err(error) = exporter {
            tracing::error!(
                "TWOFOLD_MAILER_METRICS_ADDR: cannot serve metrics on {address}: {error}"
            );
            return ExitCode::from(2);
        }
        tracing::info!(%address, "serving metrics");
    }
    let [sealing_key, retired_keys] =
        twofold_mailer::ROOT_KEY_SETTINGS.map(|name| std::env::var_os(name).is_some());
    let root_keys = twofold_mailer::refuse_root_keys(sealing_key, retired_keys);
    let settings = match root_keys.and_then(|()| args.into_settings()) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(?settings, "starting");
    match twofold_mailer::run(settings, shutdown_signal()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("the mailer failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_telemetry(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received: shutting down"),
        () = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}
