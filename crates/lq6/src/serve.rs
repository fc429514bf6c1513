//! PLACEHOLDER, owned by the DHCPv6 server work (issue 4).
#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}
pub async fn run(_a: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve: not built yet")
}
