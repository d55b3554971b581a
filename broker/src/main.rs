//! `credential-broker`: wiring only. Parse the command line, then serve, mint a token, or check
//! health.

use credential_broker::config::{Cli, Command};
use credential_broker::{mint, ops, server, telemetry};

fn main() -> std::process::ExitCode {
    let cli = match Cli::parse_from_env(std::env::args_os()) {
        Ok(cli) => cli,
        Err(Ok(help)) => {
            print!("{help}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(Err(error)) => {
            // One line naming the variable (`BROKER_JWT_LEEWAY: …`), exit 2 as for a bad setting.
            eprintln!("credential-broker: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("credential-broker: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
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
    if let Err(e) = telemetry::install() {
        eprintln!("credential-broker: {e}");
        return 2;
    }
    ops::init_logging(config.log_format);
    let code = match server::run(config).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("credential-broker: {e:#}");
            1
        }
    };
    telemetry::shutdown().await;
    code
}
