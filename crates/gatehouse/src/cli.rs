//! The command line: `serve` and the administration commands, all on the
//! same configuration.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{Application, build_auth};
use crate::auth::accounts::{RegisterError, Registrar};
use crate::auth::types::{Permission, RoleName};
use crate::config::Config;

/// gatehouse: authentication and authorization server.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// TOML configuration file (GATEHOUSE_* environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage roles.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from the first line of stdin.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (never from the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// A role to grant (repeatable); it must exist (see `role set`).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// Create a role or replace its permissions.
    Set {
        name: String,
        #[arg(value_name = "PERM")]
        permissions: Vec<String>,
    },
}

/// Runs the command line: exit 0 on success, 1 on failure with one line on
/// stderr, 2 on a usage error.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("gatehouse: {}", one_line(e));
    ExitCode::FAILURE
}

/// The cause chain on one line, without the repetition of errors whose
/// message already ends with their source's.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if parts.last().is_some_and(|prev| prev.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    password_stdin: _,
                    roles,
                },
        } => create_user(config, &email, &roles).await,
        Command::Role {
            command: RoleCommand::Set { name, permissions },
        } => set_role(config, &name, &permissions).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    {
        // The first stdout line is a contract: scripts and tests read the
        // bound address from it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    tracing::info!(%addr, "gatehouse serving");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::BufReader::new(std::io::stdin().lock().take(4096))
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    Ok(password)
}

async fn create_user(config: Config, email: &str, roles: &[String]) -> anyhow::Result<()> {
    let roles = roles
        .iter()
        .map(|r| RoleName::parse(r).map_err(|e| anyhow::anyhow!("--role {r:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let password = read_password_line()?;
    let auth = build_auth(&config, 1).await?;
    let user = match auth
        .register(email, password, roles, Registrar::Operator)
        .await
    {
        Ok(u) => u,
        Err(RegisterError::Invalid(errors)) => {
            let why: Vec<String> = errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect();
            anyhow::bail!("{}", why.join("; "));
        }
        Err(RegisterError::EmailTaken) => anyhow::bail!("a user with this email already exists"),
        Err(RegisterError::UnknownRole(r)) => {
            anyhow::bail!(
                "unknown role {r:?} (create it first with `gatehouse role set {r} PERM...`)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    println!("created user {} {}", user.id, user.email);
    Ok(())
}

async fn set_role(config: Config, name: &str, permissions: &[String]) -> anyhow::Result<()> {
    let name = RoleName::parse(name).map_err(|e| anyhow::anyhow!("role {name:?}: {e}"))?;
    let permissions = permissions
        .iter()
        .map(|p| Permission::parse(p).map_err(|e| anyhow::anyhow!("permission {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let auth = build_auth(&config, 1).await?;
    auth.set_role(&name, &permissions).await?;
    println!(
        "role {} has {} permission(s)",
        name.as_str(),
        permissions.len()
    );
    Ok(())
}
