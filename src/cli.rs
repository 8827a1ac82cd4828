//! The `standby` command line (CONTRACT section 1).

use crate::config::{Config, ConfigError, process_env};
use clap::{Parser, Subcommand, ValueEnum};
use standby_domain::{Clock, SystemClock};
use standby_store::{NewUser, Store};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "standby",
    version,
    about = "Vaccination sign-up and reserve list"
)]
struct Cli {
    /// Address to serve on (STANDBY_LISTEN).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// sqlite://PATH or postgres://… (DATABASE_URL).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Web server and background workers (the default).
    Serve,
    /// Applies database migrations and exits.
    Migrate,
    /// Staff accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Fills the database with a demo data set and prints the staff log-ins.
    Demo {
        #[arg(long, default_value_t = 200)]
        registrants: u32,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Creates a staff account; the password is read from standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        center: Option<i64>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Admin,
    Staff,
}

/// Exit 2 with one line naming what is wrong.
fn usage_error(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("standby: {line}");
    ExitCode::from(2)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    crate::init_tls();
    let explicit_database = cli.database.is_some() || process_env("DATABASE_URL").is_some();
    let config = match Config::load(cli.listen.clone(), cli.database.clone(), &process_env) {
        Ok(c) => c,
        Err(ConfigError { setting, problem }) => {
            return usage_error(format!("{setting}: {problem}"));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage_error(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let result = match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config, !explicit_database).await,
            Command::Migrate => crate::open_store(&config.database_url)
                .await
                .map(|_| println!("migrations applied")),
            Command::User {
                command:
                    UserCommand::Add {
                        email,
                        role,
                        center,
                    },
            } => match user_add(&config, &email, role, center).await {
                Err(UserError::Usage(line)) => return usage_error(line),
                Err(UserError::Other(e)) => Err(e),
                Ok(()) => Ok(()),
            },
            Command::Demo { registrants } => demo(&config, registrants).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("standby: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("STANDBY_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if process_env("STANDBY_LOG_FORMAT").as_deref() == Some("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

async fn serve(config: Config, may_seed_demo: bool) -> anyhow::Result<()> {
    let store = crate::open_store(&config.database_url).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Some((email, password)) = &config.admin
        && !store.admin_exists().await?
    {
        let hash = crate::security::hash_password(password)?;
        let user = NewUser {
            email: email.to_lowercase(),
            password_hash: hash,
            role: "admin".into(),
            center_id: None,
        };
        store.create_user(&user, "startup", clock.now_ms()).await?;
        tracing::info!("created the admin account from STANDBY_ADMIN_EMAIL");
    }
    if may_seed_demo && store.list_centers().await?.is_empty() && !store.admin_exists().await? {
        // A newcomer's first `cargo run` gets something to try.
        println!("Empty default database: loading the demo data set.");
        crate::demo::seed(store.as_ref(), &config, clock.as_ref(), 200)
            .await?
            .print();
    }
    lay_out_log(&store, config.sqlite_wal_mb);
    let listener = bind(config.listen, config.reuse_port)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (STANDBY_LISTEN): {e}", config.listen))?;
    let state = crate::App::with_background(config, store, clock, background_runtime()?);
    crate::spawn_workers(&state)?;
    tracing::info!(address = %state.config.listen, "serving on {}", state.config.public_url);
    crate::serve_until(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// SQLite: the write-ahead log a surge will need is laid out in the
/// background while the server starts answering (see the store's
/// `lay_out_log`); a failure only means the log grows as it is written.
fn lay_out_log(store: &Arc<standby_store::SqlStore>, mib: u32) {
    if store.backend() != standby_store::Backend::Sqlite {
        return;
    }
    if mib == 0 {
        tracing::info!(
            "write-ahead log not laid out: it grows as it is written (STANDBY_SQLITE_WAL_MB sets how many MiB to reserve for a launch-day surge)"
        );
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match store.lay_out_log(u64::from(mib) << 20).await {
            Ok(bytes) => tracing::info!(
                requested_mib = mib,
                added_mib = bytes >> 20,
                duration_ms = started.elapsed().as_millis() as u64,
                "write-ahead log laid out"
            ),
            Err(e) => tracing::warn!(error = %e, "the write-ahead log was not laid out"),
        }
    });
}

/// A runtime for background work, beside the one serving HTTP. Two
/// threads, so that the engine preparing a large wave does not hold up the
/// sign-up writer loops or the dispatchers. It lives as long as the process.
fn background_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("standby-background")
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the background runtime: {e}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("standby-background".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| anyhow::anyhow!("cannot start the background thread: {e}"))?;
    Ok(handle)
}

/// Binds the listening socket with a deep accept queue (a launch-day surge
/// connects all at once). With `reuse_port`, several `standby serve`
/// processes share one port (SO_REUSEPORT) and the kernel spreads
/// connections across them.
pub fn bind(
    addr: std::net::SocketAddr,
    reuse_port: bool,
) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(65_535)?;
    tokio::net::TcpListener::from_std(socket.into())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

enum UserError {
    Usage(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for UserError {
    fn from(e: anyhow::Error) -> Self {
        UserError::Other(e)
    }
}

async fn user_add(
    config: &Config,
    email: &str,
    role: Role,
    center: Option<i64>,
) -> Result<(), UserError> {
    let email = standby_domain::Email::parse(email)
        .map_err(|_| UserError::Usage("--email: not a valid e-mail address".into()))?;
    match (role, center) {
        (Role::Staff, None) => {
            return Err(UserError::Usage(
                "--center: required for the staff role".into(),
            ));
        }
        (Role::Admin, Some(_)) => {
            return Err(UserError::Usage(
                "--center: an admin belongs to no centre".into(),
            ));
        }
        _ => {}
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| UserError::Other(e.into()))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 10 {
        return Err(UserError::Usage(
            "password (standard input): at least 10 characters".into(),
        ));
    }
    let store = crate::open_store(&config.database_url).await?;
    if let Some(c) = center
        && store
            .known_centers(&[c])
            .await
            .map_err(anyhow::Error::from)?
            .is_empty()
    {
        return Err(UserError::Usage(format!("--center: no centre with id {c}")));
    }
    let user = NewUser {
        email: email.as_str().to_lowercase(),
        password_hash: crate::security::hash_password(password)?,
        role: match role {
            Role::Admin => "admin".into(),
            Role::Staff => "staff".into(),
        },
        center_id: center,
    };
    match store.create_user(&user, "cli", SystemClock.now_ms()).await {
        Ok(id) => {
            println!("created user {id}");
            Ok(())
        }
        Err(standby_store::StoreError::Conflict(_)) => Err(UserError::Usage(
            "--email: a user with this e-mail exists".into(),
        )),
        Err(e) => Err(UserError::Other(e.into())),
    }
}

async fn demo(config: &Config, registrants: u32) -> anyhow::Result<()> {
    let store = crate::open_store(&config.database_url).await?;
    let summary = crate::demo::seed(store.as_ref(), config, &SystemClock, registrants).await?;
    summary.print();
    Ok(())
}
