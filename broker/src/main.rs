//! `credential-broker`: wiring only. Parse the command line, then serve, mint a token, or check
//! health.

use clap::Parser;
use credential_broker::config::{Cli, Command};
use credential_broker::{mint, ops, server};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match cli.command {
        Some(Command::MintToken(args)) => match mint::mint(&args, mint::secret_from_env().as_ref())
        {
            Ok(token) => {
                println!("{token}");
                0
            }
            Err(e) => {
                eprintln!("mint-token: {e}");
                2
            }
        },
        Some(Command::Healthcheck(args)) => runtime.block_on(ops::healthcheck(args)),
        Some(Command::Audit(args)) => credential_broker::audit::run(&args),
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        None => runtime.block_on(serve(cli.serve)),
    };
    std::process::ExitCode::from(code as u8)
}

async fn serve(args: credential_broker::config::ServeArgs) -> i32 {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("credential-broker: {e}");
            return 2;
        }
    };
    let _ = rustls_provider();
    ops::init_logging(config.log_format);
    match server::run(config).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("credential-broker: {e:#}");
            1
        }
    }
}

/// rustls needs one process-wide crypto provider when several are compiled in (the dependency
/// graph enables both ring and aws-lc-rs); the redis crate's `rediss://` connections build their
/// TLS config from that default and would panic without one. aws-lc-rs is the one the AWS SDK
/// already uses. `Err` means a provider was already installed, which is harmless.
fn rustls_provider() -> Result<(), ()> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| ())
}
