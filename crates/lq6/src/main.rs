//! `lq6`: one binary, one subcommand per job. Each subcommand lives in its
//! own module with an `Args` struct and a `run` function.

mod check_config;
mod decode;
mod leases;
mod query;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lq6",
    version,
    about = "DHCPv6 server with Leasequery (RFC 5007), Bulk Leasequery (RFC 5460) and Active Leasequery (RFC 7653)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DHCPv6 and leasequery (with no --config: a built-in demo on loopback).
    Serve(serve::ServeArgs),
    /// Validate a configuration file and report errors with file, line and key.
    CheckConfig(check_config::CheckConfigArgs),
    /// Ask a leasequery server (UDP or TCP Bulk Leasequery).
    Query(query::QueryArgs),
    /// Inspect or import a lease store.
    Leases(leases::LeasesArgs),
    /// Decode a DHCPv6 message given in hex and print it as a tree.
    Decode(decode::DecodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LQ6_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lq6: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve::run(a).await.map(|_| ExitCode::SUCCESS),
            Cmd::CheckConfig(a) => check_config::run(a),
            Cmd::Query(a) => query::run(a).await,
            Cmd::Leases(a) => leases::run(a).await.map(|_| ExitCode::SUCCESS),
            Cmd::Decode(a) => decode::run(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lq6: {e:#}");
            ExitCode::FAILURE
        }
    }
}
