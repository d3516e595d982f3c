//! `murmur`: parses the command line, sets up logging, and runs the subcommand.

use clap::Parser;
use murmur_node::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_env("MURMUR_LOG")
                        .unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .init();
            murmur_node::run((*args).into(), murmur_node::shutdown_signal()).await
        }
        Command::Status(a) => murmur_node::cli::status(&a).await,
        Command::Peers(a) => murmur_node::cli::peers(&a).await,
        Command::Digest(a) => murmur_node::cli::digest(&a).await,
        Command::Diff(a) => murmur_node::cli::diff(&a).await,
        Command::Health(a) => murmur_node::cli::health(&a).await,
        Command::Init(a) => murmur_node::cli::init(&a).await,
        Command::Invite(a) => murmur_node::cli::invite(&a).await,
        Command::Devices(a) => murmur_node::cli::devices(&a).await,
    }
}
