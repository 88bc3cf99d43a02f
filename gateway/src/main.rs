//! The `starcite` binary: config -> telemetry -> Gateway::start -> serve.

use std::process::ExitCode;

use gateway::Gateway;
use gateway::config::{Config, Invocation};
use tracing::error;

// Every request allocates on whichever worker thread serves it; glibc's allocator serialises
// those threads on its arena locks (seen in the append profiles), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_process() {
        Ok(Invocation::Run(config)) => *config,
        Ok(Invocation::Help(text)) => {
            eprint!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("starcite: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = gateway::telemetry::init(&config.log, config.log_format);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            error!("cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let ops = match config.ops_listen {
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                error!("cannot listen on {address} (STARCITE_OPS_LISTEN): {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let gateway = match Gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(err) => {
            error!("cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = gateway.serve_on(listener, ops, stop_signal()).await;
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("server failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM (what `docker stop` and orchestrators send).
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(_) => return interrupt.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
