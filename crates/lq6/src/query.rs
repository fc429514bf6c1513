//! PLACEHOLDER, owned by the requestor work (issue 6).
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct QueryArgs {}
pub async fn run(_a: QueryArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("query: not built yet")
}
