//! `lq6 serve`: the DHCPv6 server (UDP) and the leasequery responder (UDP + TCP Bulk).
//!
//! Without `--config` it serves the built-in demo (`lq6_config::DEMO_TOML`): UDP and TCP on
//! `[::1]:547`, lease database in `$XDG_STATE_HOME/lq6` (or `~/.local/state/lq6`, or the temp dir).
//! It logs `listening on udp [addr]:port` and `listening on tcp [addr]:port` with the bound
//! ports, so tests can pass `--port 0 --tcp-port 0` and parse them.

use anyhow::Context;
use lq6_config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, the built-in loopback demo runs.
    #[arg(long, short, env = "LQ6_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override the UDP port of every `server.listen` address and of `server.port` (0: any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Override the port of every `leasequery.tcp.listen` address (0: any free port).
    #[arg(long)]
    pub tcp_port: Option<u16>,
    /// Override `[store] path` (embedded SQLite lease database).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Do not log one line per transaction (for load tests).
    #[arg(long)]
    pub quiet: bool,
}

fn set_port(v: &mut [SocketAddr], port: Option<u16>) {
    if let Some(p) = port {
        for a in v {
            a.set_port(p);
        }
    }
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => {
            let dir = lq6_config::demo_state_dir();
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            info!(state = %dir.display(), "no --config: serving the built-in demo on [::1]:547 (udp and tcp)");
            lq6_config::demo()
        }
    };
    set_port(&mut cfg.server.listen, a.port);
    if let Some(p) = a.port {
        cfg.server.port = p;
    }
    set_port(&mut cfg.leasequery.tcp.listen, a.tcp_port);
    if let Some(s) = &a.store {
        cfg.store.path = Some(s.clone());
        cfg.store.postgres = None;
    }
    let shutdown = CancellationToken::new();
    // [metrics] listen: bind before serving so a bad address fails at start-up.
    let metrics = match cfg.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("[metrics] listen = {addr}"))?;
            info!("metrics listening on http {}", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let metrics_shutdown = shutdown.clone();
    let server = tokio::spawn(lq6_server::serve::serve_with(
        cfg,
        !a.quiet,
        shutdown.clone(),
        move |started| {
            if let Some(l) = metrics {
                let render = std::sync::Arc::new(move || render_metrics(&started));
                tokio::spawn(lq6_leasequery::metrics::serve(l, render, metrics_shutdown));
            }
        },
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut server = server;
    tokio::select! {
        r = &mut server => return Ok(r??),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
    server.await??;
    Ok(())
}

/// Prometheus text for the DHCPv6 server's counters and the responder's.
fn render_metrics(s: &lq6_server::serve::Started) -> String {
    use std::fmt::Write;
    let mut out = String::from("# TYPE lq6_dhcp_total counter\n");
    for (name, v) in s.counters.snapshot() {
        let _ = writeln!(out, "lq6_dhcp_total{{counter=\"{name}\"}} {v}");
    }
    out.push_str(&s.responder.metrics().render());
    out
}
