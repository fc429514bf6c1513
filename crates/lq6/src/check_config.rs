//! PLACEHOLDER, owned by the DHCPv6 server work (issue 4).
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct CheckConfigArgs {
    pub file: std::path::PathBuf,
}
pub fn run(_a: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check-config: not built yet")
}
