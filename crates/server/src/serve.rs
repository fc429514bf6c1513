//! Everything `lq6 serve` runs, as a library function: open the store, load or create the
//! server DUID, build the engine and the leasequery responder, bind UDP and TCP, serve until
//! cancelled. Logs `listening on udp [addr]:port` / `listening on tcp [addr]:port`.

use crate::{udp, Engine, EngineOptions, LinkTable};
use lq6_config::Config;
use lq6_leasequery::{LinkMap, Responder};
use lq6_store::LeaseStore;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("lease store: {0}")]
    Store(#[from] lq6_store::StoreError),
    #[error("server DUID: {0}")]
    Duid(#[from] crate::duid::DuidError),
    #[error("{0}")]
    Udp(#[from] udp::UdpError),
    #[error("cannot bind tcp {addr}: {source}")]
    Tcp {
        addr: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Engine(#[from] crate::EngineError),
}

/// What a running server exposes to its host (metrics).
#[derive(Clone)]
pub struct Started {
    pub counters: Arc<crate::Counters>,
    pub responder: Arc<Responder>,
}

/// Opens the store named by `[store]`.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn LeaseStore>, ServeError> {
    match (&cfg.store.path, &cfg.store.postgres) {
        (Some(p), _) => {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d).map_err(|source| ServeError::Io {
                    what: format!("creating {}", d.display()),
                    source,
                })?;
            }
            let path = p.clone();
            let opts = lq6_store::sqlite::SqliteOptions {
                reader_mmap_bytes: cfg.store.mmap_mib.saturating_mul(1 << 20),
                address_index: cfg.store.address_index,
                ..Default::default()
            };
            let s = tokio::task::spawn_blocking(move || {
                lq6_store::sqlite::SqliteStore::open_with(path, opts)
            })
            .await
            .map_err(|e| ServeError::Config(format!("store open task failed: {e}")))??;
            info!(path = %p.display(), "lease store: sqlite");
            Ok(Arc::new(s))
        }
        (None, Some(url)) => {
            let s = lq6_store::postgres::PgStore::connect(url).await?;
            info!("lease store: postgres");
            Ok(Arc::new(s))
        }
        (None, None) => Err(ServeError::Config(
            "no lease store configured ([store] path or postgres)".into(),
        )),
    }
}

/// Runs the server until `shutdown` is cancelled, then waits for in-flight transactions.
pub async fn serve(
    cfg: Config,
    log_transactions: bool,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with(cfg, log_transactions, shutdown, |_| {}).await
}

/// [`serve`], handing the server's [`Counters`](crate::Counters) (every drop reason and message
/// count) and the responder to `on_start` once the sockets are bound, e.g. for a metrics endpoint.
pub async fn serve_with(
    cfg: Config,
    log_transactions: bool,
    shutdown: CancellationToken,
    on_start: impl FnOnce(Started) + Send,
) -> Result<(), ServeError> {
    let store = open_store(&cfg).await?;
    let server_duid = match cfg.server_duid() {
        Some(d) => d,
        None => {
            let dir = cfg.store.state_dir().ok_or_else(|| {
                ServeError::Config("no state directory for the server DUID".into())
            })?;
            crate::duid::load_or_create(&dir)?
        }
    };
    info!(duid = %server_duid, "server DUID");

    let links = Arc::new(LinkTable::from_config(&cfg));
    let linkmap: Arc<dyn LinkMap> = links.clone();
    let responder = Responder::new(
        cfg.leasequery.clone(),
        linkmap,
        store.clone(),
        server_duid.clone(),
    );
    let mut opts = EngineOptions::from_config(&cfg);
    opts.log_transactions = log_transactions;
    let engine = Arc::new(Engine::new(
        &cfg,
        links,
        store.clone(),
        server_duid,
        cfg.leasequery.udp.then(|| responder.clone()),
        opts,
    ));
    let now = lq6_store::unix_now();
    if let Err(e) = store.expire(now).await {
        warn!(error = %e, "initial reclaim failed");
    }
    let taken = engine.load(now).await?;
    info!(
        taken,
        clients = engine.cached_clients(),
        "leases loaded from the store"
    );

    let listeners = udp::bind(&cfg.server.listen, &cfg.server.interfaces, cfg.server.port)?;
    for l in &listeners {
        if let Ok(addr) = l.socket.local_addr() {
            match (&l.iface, l.multicast) {
                (Some(i), true) => info!("listening on udp {addr} (joined ff02::1:2 on {i})"),
                (Some(i), false) => info!("listening on udp {addr} (interface {i})"),
                (None, _) => info!("listening on udp {addr}"),
            }
        }
    }
    let mut tcp = Vec::new();
    if cfg.leasequery.tcp.enabled {
        for addr in &cfg.leasequery.tcp.listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Tcp {
                    addr: addr.to_string(),
                    source,
                })?;
            if let Ok(a) = l.local_addr() {
                info!("listening on tcp {a}");
            }
            tcp.push(l);
        }
    }

    on_start(Started {
        counters: engine.counters(),
        responder: responder.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(udp::run(
        engine.clone(),
        listeners,
        cfg.server.max_in_flight,
        cfg.server.udp_workers,
        shutdown.clone(),
    ));
    tasks.spawn(udp::reclaim_loop(
        engine.clone(),
        cfg.lease.reclaim_interval,
        shutdown.clone(),
    ));
    {
        let t = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = responder.run_tcp(tcp, t).await {
                warn!(error = %e, "bulk leasequery listener failed");
            }
        });
    }
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    let c = engine.counters().snapshot();
    info!(counters = ?c.iter().filter(|(_, v)| *v > 0).collect::<Vec<_>>(), "stopped");
    Ok(())
}
