//! `lq6 check-config FILE`: parse and validate a configuration; errors name the file, the
//! line and the key (e.g. `lq6.toml:14:1: key `links[0].rapid_comit`: unknown field ...`).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckConfigArgs {
    /// The TOML configuration file to check.
    pub file: std::path::PathBuf,
}

pub fn run(a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    match lq6_config::Config::from_file(&a.file) {
        Ok(c) => {
            let pools: usize = c.links.iter().map(|l| l.pools.len()).sum();
            let pd: usize = c.links.iter().map(|l| l.pd_pools.len()).sum();
            println!(
                "{}: ok ({} links, {} address pools, {} PD pools, {} reservations)",
                a.file.display(),
                c.links.len(),
                pools,
                pd,
                c.reservations.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
