//! Placeholder until the lead's server lands: wires every stage from a Config.

/// Runs a node until it is stopped.
pub async fn run(config: crate::config::Config) -> anyhow::Result<()> {
    let _ = config;
    Err(anyhow::anyhow!("not yet wired"))
}
