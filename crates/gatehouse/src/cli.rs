//! The command line: `serve` and the administration commands, all on the
//! same configuration.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{Application, build_services, default_issuer};
use crate::auth::accounts::{RegisterError, Registrar};
use crate::auth::audit::Actor;
use crate::auth::keys::KeyRing;
use crate::auth::types::{Permission, RoleName};
use crate::config::{Config, DatabaseUrl, JwtAlg};
use crate::model::oidc::IdTokenAlg;

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
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage resource servers (services that follow the revocation feed).
    ResourceServer {
        #[command(subcommand)]
        command: ResourceServerCommand,
    },
    /// Manage OpenID clients (the applications that sign users in through
    /// gatehouse).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (the file and GATEHOUSE_* variables) and
    /// print the effective value of every key, secrets hidden; opens no
    /// database.
    Check,
}

#[derive(Debug, Subcommand)]
enum ResourceServerCommand {
    /// Create a resource server and print its key (shown this once).
    Create { name: String },
    /// List the resource servers.
    List,
    /// Delete a resource server: its key stops working at once.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client and print its id and, for a confidential client,
    /// its secret (shown this once).
    Create {
        /// For people (shown where users sign in): 1 to 100 characters.
        #[arg(long)]
        name: String,
        /// A redirect URI (repeatable; at least one while the client may
        /// use authorization_code): https, http on the loopback interface,
        /// or a private-use scheme such as com.example.app:/cb.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where RP-initiated logout may send the browser back to
        /// (repeatable), under the redirect URIs' rules.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (a browser or native app): no secret.
        #[arg(long)]
        public: bool,
        /// The operator's own application.
        #[arg(long)]
        first_party: bool,
        /// A grant type the client may use (repeatable): authorization_code,
        /// refresh_token, client_credentials; default authorization_code
        /// and refresh_token.
        #[arg(long = "grant-type", value_name = "GRANT")]
        grant_types: Vec<String>,
        /// A role whose permissions the client's client_credentials tokens
        /// carry (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// List the clients (never their secrets).
    List,
    /// Delete a client: the tokens of its secret are refused, and every
    /// session it holds with users ends.
    Delete { client_id: String },
    /// Give a confidential client a new secret (printed this once): the
    /// old one stops working, and the tokens obtained with it are refused.
    RotateSecret { client_id: String },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new access-token signing key; the previous one stays
    /// published until every token it signed has expired.
    Rotate {
        /// Rotate the three ID-token keys (RS256, ES256, EdDSA) instead of
        /// the access-token key.
        #[arg(long)]
        id_tokens: bool,
    },
    /// List the signing keys and their state.
    List,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a token's header and claims, and whether its signature verifies
    /// against the server's keys.
    Decode { token: String },
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
        /// Mark the address verified (the operator vouches for it), so
        /// `email_verification = "required"` lets the user sign in at once.
        #[arg(long)]
        email_verified: bool,
    },
    /// Disable a user: every session of theirs ends, and they cannot log in.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// List every user.
    List,
    /// Remove every second factor and recovery code of a user (who lost
    /// their authenticator): their password alone signs them in again.
    ResetMfa {
        /// The user's email.
        email: String,
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

/// The command line's definition (for its reference, docs/reference/cli.md,
/// and the test that keeps the two equal).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
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
    let default_level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    crate::telemetry::init(default_level, config.log_format);
    if !matches!(cli.command, Command::Serve | Command::Config { .. }) {
        refuse_a_new_database(&config, cli.config.as_deref())?;
    }
    match cli.command {
        Command::Serve => serve(config).await,
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    password_stdin: _,
                    roles,
                    email_verified,
                },
        } => create_user(config, &email, &roles, email_verified).await,
        Command::User {
            command: UserCommand::Disable { email },
        } => disable_user(config, &email).await,
        Command::User {
            command: UserCommand::List,
        } => list_users(config).await,
        Command::User {
            command: UserCommand::ResetMfa { email },
        } => reset_mfa(config, &email).await,
        Command::Role {
            command: RoleCommand::Set { name, permissions },
        } => set_role(config, &name, &permissions).await,
        Command::Keys {
            command: KeysCommand::Rotate { id_tokens: false },
        } => {
            let svc = build_services(&config, 1, default_issuer(&config)).await?;
            let kid = svc.admin.rotate_signing_key(Actor::Cli).await?;
            println!("new signing key {kid}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { id_tokens: true },
        } => {
            let svc = build_services(&config, 1, default_issuer(&config)).await?;
            let kids = svc.admin.rotate_id_token_keys(Actor::Cli).await?;
            let mut out = std::io::stdout().lock();
            for (alg, kid) in IdTokenAlg::ALL.into_iter().zip(kids) {
                writeln!(out, "new ID-token signing key {} {kid}", alg.as_str())?;
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::List,
        } => list_keys(config).await,
        Command::Token {
            command: TokenCommand::Decode { token },
        } => decode_token(config, &token).await,
        Command::ResourceServer { command } => resource_server(config, command).await,
        Command::Client { command } => client(config, command).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => check_config(&config, cli.config.as_deref()),
    }
}

/// `config check`: the configuration loaded (so valid), then every key's
/// effective value as TOML, unset keys as comments, secrets hidden.
fn check_config(config: &Config, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    // The certificate and key are read, and must belong together, as at
    // the server's start.
    if let Some(files) = &config.tls {
        crate::tls::server_config(files)?;
    }
    // Mail as at the server's start: the templates compiled and tried, the
    // sender and the CA file read.
    if let Some(url) = &config.smtp_url {
        crate::mail::Templates::load(config.email_templates.as_deref())?;
        crate::mail::Smtp::new(
            url,
            &crate::app::email_from(config, &default_issuer(config)),
            config.smtp_ca_file.as_deref(),
        )?;
    }
    let mut out = std::io::stdout().lock();
    let source = file.map_or_else(
        || "no file".to_owned(),
        |f| format!("the file {}", f.display()),
    );
    writeln!(
        out,
        "# The configuration is valid: {source} and the GATEHOUSE_* variables, secrets hidden."
    )?;
    for (key, value) in config.effective() {
        match value {
            Some(value) => writeln!(out, "{key} = {value}")?,
            None => writeln!(out, "# {key} is unset")?,
        }
    }
    Ok(())
}

/// Only `serve` creates the SQLite file: an admin command run in the wrong
/// directory, or without `--config`, would otherwise work on a brand-new,
/// empty database (and print a brand-new signing key) as if it were the
/// server's.
fn refuse_a_new_database(config: &Config, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let DatabaseUrl::Sqlite(url) = &config.database_url else {
        // PostgreSQL: gatehouse never creates the database itself.
        return Ok(());
    };
    let Some(path) = crate::store::sqlite::database_file(url)? else {
        return Ok(());
    };
    // A path that cannot be examined (a directory without search
    // permission) is that failure, not "no database".
    if path
        .try_exists()
        .with_context(|| format!("database_url: cannot examine {}", path.display()))?
    {
        return Ok(());
    }
    let whence = match file {
        Some(file) => format!("from --config {} or GATEHOUSE_DATABASE_URL", file.display()),
        None => "no --config given: the default, or GATEHOUSE_DATABASE_URL".into(),
    };
    anyhow::bail!(
        "no database at {} (database_url = {url}; {whence}): only `gatehouse serve` creates one; \
         run the command with the server's --config FILE, or from the directory the server runs in",
        path.display()
    )
}

async fn resource_server(config: Config, command: ResourceServerCommand) -> anyhow::Result<()> {
    use crate::auth::feed::CreateResourceServerFailure;
    use crate::auth::types::ResourceServerId;
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    match command {
        ResourceServerCommand::Create { name } => {
            let created = match svc.feed.create_resource_server(&name, Actor::Cli).await {
                Ok(c) => c,
                Err(CreateResourceServerFailure::Invalid(errors)) => {
                    let why: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                    anyhow::bail!("{}", why.join("; "));
                }
                Err(CreateResourceServerFailure::NameTaken) => {
                    anyhow::bail!("a resource server named {name:?} exists")
                }
                Err(CreateResourceServerFailure::Store(e)) => return Err(e),
            };
            // The key goes to stdout alone on its line, so scripts can take it.
            println!(
                "created resource server {} {}",
                created.record.id, created.record.name
            );
            println!("{}", created.key.key());
        }
        ResourceServerCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<36} {:<25} NAME", "ID", "CREATED")?;
            for rs in svc.feed.resource_servers().await? {
                writeln!(
                    out,
                    "{:<36} {:<25} {}",
                    rs.id,
                    rfc3339(rs.created_at),
                    rs.name
                )?;
            }
        }
        ResourceServerCommand::Delete { id } => {
            let parsed = ResourceServerId::parse(&id)
                .ok_or_else(|| anyhow::anyhow!("{id:?} is not a resource server id"))?;
            anyhow::ensure!(
                svc.feed.delete_resource_server(parsed, Actor::Cli).await?,
                "no resource server {id}"
            );
            println!("deleted resource server {id}");
        }
    }
    Ok(())
}

async fn client(config: Config, command: ClientCommand) -> anyhow::Result<()> {
    use crate::auth::clients::{ClientFailure, ClientSpec};
    use crate::auth::types::ClientId;
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    match command {
        ClientCommand::Create {
            name,
            redirect_uris,
            post_logout_redirect_uris,
            public,
            first_party,
            grant_types,
            roles,
        } => {
            let spec = ClientSpec {
                name,
                kind: if public { "public" } else { "confidential" }.to_owned(),
                redirect_uris,
                post_logout_redirect_uris: Some(post_logout_redirect_uris),
                first_party: Some(first_party),
                grant_types: (!grant_types.is_empty()).then_some(grant_types),
                roles: Some(roles),
                ..ClientSpec::default()
            };
            let created = match svc.clients.create(spec, Actor::Cli).await {
                Ok(c) => c,
                Err(ClientFailure::Invalid(errors)) => {
                    let why: Vec<String> = errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect();
                    anyhow::bail!("{}", why.join("; "));
                }
                Err(ClientFailure::NotFound | ClientFailure::NoSecret) => {
                    anyhow::bail!("no such client")
                }
                Err(ClientFailure::Store(e)) => return Err(e),
            };
            let c = &created.record;
            println!("created {} client {} {}", c.kind.as_str(), c.id, c.name);
            // The secret goes to stdout alone on its line, so scripts can
            // take it.
            if let Some(secret) = &created.secret {
                println!("{}", secret.secret());
            }
        }
        ClientCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36} {:<12} {:<25} NAME",
                "CLIENT_ID", "TYPE", "CREATED"
            )?;
            for c in svc.clients.clients().await? {
                writeln!(
                    out,
                    "{:<36} {:<12} {:<25} {}",
                    c.id,
                    c.kind.as_str(),
                    rfc3339(c.created_at),
                    c.name
                )?;
            }
        }
        ClientCommand::Delete { client_id } => {
            let parsed = ClientId::parse(&client_id)
                .ok_or_else(|| anyhow::anyhow!("{client_id:?} is not a client id"))?;
            anyhow::ensure!(
                svc.provider.delete_client(parsed, Actor::Cli).await?,
                "no client {client_id}"
            );
            println!("deleted client {client_id}");
        }
        ClientCommand::RotateSecret { client_id } => {
            let parsed = ClientId::parse(&client_id)
                .ok_or_else(|| anyhow::anyhow!("{client_id:?} is not a client id"))?;
            let secret = match svc.provider.rotate_secret(parsed, Actor::Cli).await {
                Ok(secret) => secret,
                Err(ClientFailure::NotFound) => anyhow::bail!("no client {client_id}"),
                Err(ClientFailure::NoSecret) => {
                    anyhow::bail!("client {client_id} is public: it has no secret")
                }
                Err(ClientFailure::Invalid(_)) => anyhow::bail!("client {client_id} is invalid"),
                Err(ClientFailure::Store(e)) => return Err(e),
            };
            println!("rotated the secret of client {client_id}");
            // Alone on its line, as `client create` prints it.
            println!("{}", secret.secret());
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Registered before anything is served: a SIGTERM that arrives once the
    // listening line is out must stop the server gracefully, never kill it
    // by the default action (seen under load: the handler used to be
    // installed only when the shutdown future was first polled).
    let shutdown = shutdown_signal();
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    {
        // The first stdout line is a contract, word for word (API.md,
        // `listen`): scripts and tests read the bound address from it, so
        // it says `http://` even when the port speaks TLS; the log line
        // below names the real scheme.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    tracing::info!(url = %app.base_url(), "gatehouse serving");
    app.run_until(shutdown).await?;
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled. A signal whose handler
/// cannot be installed is not waited for (it keeps its default action).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => tracing::info!("SIGINT received, shutting down"),
                () = wait(terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("SIGINT received, shutting down");
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

async fn create_user(
    config: Config,
    email: &str,
    roles: &[String],
    email_verified: bool,
) -> anyhow::Result<()> {
    let roles = roles
        .iter()
        .map(|r| RoleName::parse(r).map_err(|e| anyhow::anyhow!("--role {r:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let password = read_password_line()?;
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let user = match svc
        .accounts
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
    if email_verified {
        svc.mail.set_verified(user.id, true, Actor::Cli).await?;
    }
    println!("created user {} {}", user.id, user.email);
    Ok(())
}

async fn set_role(config: Config, name: &str, permissions: &[String]) -> anyhow::Result<()> {
    let name = RoleName::parse(name).map_err(|e| anyhow::anyhow!("role {name:?}: {e}"))?;
    let permissions = permissions
        .iter()
        .map(|p| Permission::parse(p).map_err(|e| anyhow::anyhow!("permission {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    svc.admin.set_role(&name, &permissions, Actor::Cli).await?;
    println!(
        "role {} has {} permission(s)",
        name.as_str(),
        permissions.len()
    );
    Ok(())
}

async fn list_keys(config: Config) -> anyhow::Result<()> {
    use crate::auth::keys::KeyState;
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<45} {:<8} {:<6} {:<25} {:<9} STATE",
        "KID", "PURPOSE", "ALG", "CREATED", "AT REST"
    )?;
    for k in svc.keys.list().await? {
        let state = match k.state {
            KeyState::Signing => "signing".to_owned(),
            KeyState::Published { until } => format!("published until {}", rfc3339(until)),
            KeyState::Retired { since } => format!("retired since {}", rfc3339(since)),
        };
        let created = k.created_at.map_or_else(|| "-".to_owned(), rfc3339);
        let at_rest = if k.encrypted { "encrypted" } else { "plain" };
        writeln!(
            out,
            "{:<45} {:<8} {:<6} {:<25} {:<9} {state}",
            k.kid,
            k.purpose.as_str(),
            k.alg,
            created,
            at_rest
        )?;
    }
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// `token decode`: a malformed token is a failure (exit 1); a well-formed
/// one is printed whether or not its signature verifies, and the verdict
/// says which, and whether an access-token or an ID-token key signed it.
async fn decode_token(config: Config, token: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = token.trim();
    anyhow::ensure!(token.len() <= 64 * 1024, "the token is larger than 64 KiB");
    let parts: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(
        parts.len() == 3,
        "not a JWS in compact form (expected 3 parts separated by dots, found {})",
        parts.len()
    );
    let segment =
        |i: usize, name: &str| -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
            let bytes = URL_SAFE_NO_PAD
                .decode(parts[i])
                .map_err(|_| anyhow::anyhow!("the {name} is not base64url"))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("the {name} is not a JSON object"))
        };
    let header = segment(0, "header")?;
    let mut claims = segment(1, "claims")?;
    for claim in ["exp", "iat", "nbf"] {
        if let Some(secs) = claims.get(claim).and_then(serde_json::Value::as_i64) {
            let human = time::OffsetDateTime::from_unix_timestamp(secs)
                .map_or_else(|_| "out of range".to_owned(), rfc3339);
            claims.insert(format!("{claim} (UTC)"), serde_json::Value::String(human));
        }
    }
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let verdict = match signed_by(token, &svc.keys.ring()) {
        Ok(SignedBy::Access { kid, alg }) => format!(
            "signature: valid (an access token, signed by this server's {} access-token key {kid})",
            crate::auth::keys::alg_name(alg)
        ),
        Ok(SignedBy::IdToken { kid, alg }) => format!(
            "signature: valid (an ID token, signed by this server's {} ID-token key {kid})",
            alg.as_str()
        ),
        Err(reason) => format!("signature: INVALID ({reason})"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "header: {}", serde_json::to_string_pretty(&header)?)?;
    writeln!(out, "claims: {}", serde_json::to_string_pretty(&claims)?)?;
    writeln!(out, "{verdict}")?;
    Ok(())
}

/// Which of this server's keys signed a token (`token decode`).
enum SignedBy {
    /// An access-token key; the token also passed the access-token header
    /// rules (`jwt_alg`, `typ: at+jwt`).
    Access { kid: String, alg: JwtAlg },
    /// An ID-token key, under that key's algorithm.
    IdToken { kid: String, alg: IdTokenAlg },
}

/// The `kid` picks the key, an access-token key or an ID-token key, and the
/// token must verify under that key's own algorithm (RFC 8725 §3.1): `alg:
/// none` and an algorithm of another family are refused whichever kind of
/// key it names.
///
/// # Errors
/// Why the signature does not verify, in words.
fn signed_by(token: &str, ring: &KeyRing) -> Result<SignedBy, String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use gatehouse_token_rules::{FORBIDDEN_HEADER, TokenError, UniqueObject};
    // The header as the server reads it: a member name given twice is
    // refused, not resolved to one of the two (RFC 7493 §2.3).
    let UniqueObject(header) = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| TokenError::Malformed.to_string())?;
    let alg = header.get("alg").and_then(serde_json::Value::as_str);
    match alg {
        None => return Err("the header names no algorithm (no alg)".to_owned()),
        // RFC 8725 §3.2: an unsigned token is never valid, whatever it names.
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err("alg none: an unsigned token is never valid".to_owned());
        }
        Some(_) => {}
    }
    let Some(kid) = header.get("kid").and_then(serde_json::Value::as_str) else {
        return Err("the header names no key (no kid)".to_owned());
    };
    if ring.verifier(kid).is_some() {
        return crate::auth::tokens::verify_signature(token, ring)
            .map(|_| SignedBy::Access {
                kid: kid.to_owned(),
                alg: ring.alg,
            })
            .map_err(|e| format!("access-token key {kid}: {e}"));
    }
    let Some((id_alg, key)) = ring.id_token_verifier(kid) else {
        return Err(format!(
            "the kid {kid} is none of this server's keys, access-token or ID-token"
        ));
    };
    if FORBIDDEN_HEADER.iter().any(|p| header.contains_key(*p)) {
        return Err(format!(
            "ID-token key {kid}: {}",
            TokenError::ForbiddenHeader
        ));
    }
    if alg != Some(id_alg.as_str()) {
        return Err(format!(
            "ID-token key {kid}: the token's algorithm is not the key's ({})",
            id_alg.as_str()
        ));
    }
    // RFC 9068 §4: `at+jwt` claims an access token, which no ID-token key
    // ever signs.
    let typ = header.get("typ").and_then(serde_json::Value::as_str);
    if typ.is_some_and(|t| {
        t.eq_ignore_ascii_case(crate::auth::tokens::ACCESS_TOKEN_TYP)
            || t.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(format!(
            "ID-token key {kid}: the token is typed as an access token (at+jwt)"
        ));
    }
    crate::auth::tokens::verify_jws(token, crate::auth::keys::id_token_key_alg(id_alg), key)
        .map(|_| SignedBy::IdToken {
            kid: kid.to_owned(),
            alg: id_alg,
        })
        .map_err(|e| format!("ID-token key {kid}: {e}"))
}

async fn disable_user(config: Config, email: &str) -> anyhow::Result<()> {
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let user = svc
        .admin
        .user_by_email(email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user with the email {email:?}"))?;
    svc.admin.set_disabled(user.id, true, Actor::Cli).await?;
    println!("disabled user {} {}", user.id, user.email);
    Ok(())
}

async fn reset_mfa(config: Config, email: &str) -> anyhow::Result<()> {
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let user = svc
        .admin
        .user_by_email(email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user with the email {email:?}"))?;
    match svc.factors.reset(user.id, Actor::Cli).await? {
        Some(true) => println!("removed every second factor of {} {}", user.id, user.email),
        Some(false) => println!("{} {} had no second factor", user.id, user.email),
        None => anyhow::bail!("no user with the email {email:?}"),
    }
    Ok(())
}

async fn list_users(config: Config) -> anyhow::Result<()> {
    let svc = build_services(&config, 1, default_issuer(&config)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36}  {:<40}  {:<8}  {:<24}  ROLES",
        "ID", "EMAIL", "STATE", "CREATED"
    )?;
    let mut cursor: Option<String> = None;
    loop {
        let page = svc
            .admin
            .list_users(cursor.as_deref(), crate::auth::admin::MAX_PAGE)
            .await?;
        for u in &page.users {
            let state = if u.disabled { "disabled" } else { "active" };
            writeln!(
                out,
                "{:<36}  {:<40}  {:<8}  {:<24}  {}",
                u.id,
                u.email,
                state,
                rfc3339(u.created_at),
                u.roles.join(",")
            )?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(())
}
