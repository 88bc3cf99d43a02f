//! Starcite gateway: a durable, gapless session log over NATS JetStream.
//!
//! Read in this order: `config`, `sessions` (the domain), `nats` (storage), `tail`
//! (catch-up + live), `live` (live responses), `api` (HTTP) and `admin` (the console), then
//! `Gateway` below, which ties them and composes their routes.

pub mod auth;
pub mod config;
pub mod telemetry;

pub mod sessions;

pub mod catalog;

pub mod nats;

pub mod tail;

pub mod live;

pub mod api;

pub mod admin;

pub mod shutdown;

pub mod figures;

pub mod metrics;

use std::future::Future;
use std::sync::Arc;

use poem::Route;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tracing::{info, warn};

use catalog::Catalog;
use config::Config;
use figures::Figures;
use live::{Live, TailQuota};
use metrics::Metrics;
use nats::{Store, StoreError};
use sessions::SessionLog;
use shutdown::Shutdown;

/// A running gateway's parts, ready to serve.
pub struct Gateway {
    config: Config,
    store: Arc<Store>,
    log: Arc<SessionLog>,
    catalog: Arc<Catalog>,
    figures: Arc<Figures>,
    metrics: Arc<Metrics>,
    /// Keeps the catalog view current; ended when serving ends, so the view is left durable.
    catalog_follower: tokio::task::JoinHandle<()>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    CatalogView(#[from] catalog::index::ViewError),
}

impl Gateway {
    /// Connects to NATS in the background and sets up the stream and bucket as soon as NATS
    /// answers; until then `/health/ready` says 503 and requests get `nats_unavailable`.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let store = Arc::new(Store::connect(&config.nats).await?);
        let maintainer = store.clone();
        tokio::spawn(async move { maintainer.maintain_topology().await });
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(SessionLog::new(
            store.clone(),
            config.session_cache_size,
            metrics.clone(),
        ));
        let catalog = Arc::new(Catalog::open(
            store.clone(),
            &config.catalog,
            config.nats.timeout,
        )?);
        let catalog_follower = catalog.follow();
        Ok(Gateway {
            config,
            store,
            log,
            catalog,
            figures: Arc::default(),
            metrics,
            catalog_follower,
        })
    }

    /// Serves on `listener` (and on `STARCITE_OPS_LISTEN` when set) until `stop` resolves,
    /// then closes every tail with "going away" and waits up to the shutdown timeout for open
    /// requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ops = match self.config.ops_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await?),
            None => None,
        };
        self.serve_on(listener, ops, stop).await
    }

    /// Like `serve`, on listeners bound by the caller: with `ops`, `/metrics` and `/health/*`
    /// are served there and not on `listener`.
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        ops: Option<tokio::net::TcpListener>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (trigger, shutdown) = Shutdown::new();
        let (catalog, catalog_follower) = (self.catalog.clone(), self.catalog_follower);
        let verifier = match self.config.auth.mode {
            config::AuthMode::None => None,
            config::AuthMode::Jwt => Some(Arc::new(
                auth::Verifier::new(&self.config.auth).map_err(std::io::Error::other)?,
            )),
        };
        // With tokens required everywhere else, the console requires a sign-in too.
        let sign_in = verifier
            .clone()
            .map(|verifier| admin::SignIn::new(verifier, self.config.admin.secret.as_deref()));
        if sign_in.is_some() && self.config.admin.secret.is_none() && self.config.admin.enabled {
            warn!("STARCITE_ADMIN_SECRET is not set: console sign-ins hold on this gateway only");
        }
        let admin = self.config.admin.enabled.then(|| admin::Admin {
            log: self.log.clone(),
            catalog: self.catalog.clone(),
            store: self.store.clone(),
            figures: self.figures.clone(),
            history: admin::History::start(self.metrics.clone()),
            sign_in,
        });
        let ops_stop = shutdown.clone();
        let live = Live {
            figures: self.figures,
            metrics: self.metrics.clone(),
            tail_quota: Arc::new(TailQuota::new(self.config.tail.tails_per_token)),
            ping_interval: self.config.tail.ping_interval,
            buffer: self.config.tail.buffer,
            stall_timeout: self.config.tail.stall_timeout,
            shutdown,
        };
        let api = api::ApiState {
            verifier,
            metrics: self.metrics,
            ops_elsewhere: ops.is_some(),
            log: self.log,
            catalog: self.catalog,
            store: self.store,
            live,
            limits: self.config.limits,
        };
        let routes = routes(api, admin);
        let acceptor = NoDelay(TcpAcceptor::from_tokio(listener)?);
        if let Some(address) = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
        {
            info!(http.address = %address, "listening on http://{address}");
        }
        let ops = match (ops, routes.ops) {
            (Some(listener), Some(ops_routes)) => {
                let acceptor = TcpAcceptor::from_tokio(listener)?;
                if let Some(address) = acceptor
                    .local_addr()
                    .first()
                    .and_then(|addr| addr.as_socket_addr().copied())
                {
                    info!(ops.address = %address, "metrics and health probes on http://{address}");
                }
                Some((acceptor, ops_routes))
            }
            _ => None,
        };
        let (stopped, stop_seen) = tokio::sync::oneshot::channel();
        let stop = async move {
            stop.await;
            info!("shutting down: closing tails");
            trigger.trigger();
            let _ = stopped.send(trigger);
        };
        let timeout = self.config.shutdown_timeout;
        let public = poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            routes.public,
            stop,
            Some(timeout),
        );
        match ops {
            Some((acceptor, ops_routes)) => {
                let mut ops_stop = ops_stop;
                let ops = poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                    ops_routes,
                    async move { ops_stop.wait().await },
                    Some(timeout),
                );
                tokio::try_join!(public, ops)?;
            }
            None => {
                drop(ops_stop);
                public.await?;
            }
        }
        // Tails live in upgraded connections the server no longer tracks: wait for each to
        // write its "going away" close before the process exits.
        if let Ok(trigger) = stop_seen.await
            && tokio::time::timeout(timeout, trigger.drained())
                .await
                .is_err()
        {
            warn!("some tails were still open after {timeout:?}");
        }
        catalog.stop();
        let _ = catalog_follower.await;
        Ok(())
    }
}

/// The route tree: the public API, with the console beside it at `/admin` when it is enabled;
/// the API places `/metrics` and the health probes on the public routes or the operator's.
fn routes(api: api::ApiState, console: Option<admin::Admin>) -> api::Routes {
    let mut beside = Route::new();
    if let Some(console) = console {
        beside = beside.nest("/admin", admin::routes(console, api.live.clone()));
    }
    api::routes(api, beside)
}

/// poem's TCP acceptor with Nagle's algorithm off: a tail's frame goes out when written, not
/// when the peer has acknowledged the previous one (up to a delayed-ACK timeout later).
struct NoDelay(TcpAcceptor);

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let accepted = self.0.accept().await?;
        // A socket that refuses the option still works, only slower.
        let _ = accepted.0.set_nodelay(true);
        Ok(accepted)
    }
}
