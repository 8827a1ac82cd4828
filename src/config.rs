//! Configuration from flags and environment variables (CONTRACT section 1).
//! Every bad setting is reported as one line naming it.

use standby_domain::Country;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A bad setting: the message names it. The command line exits 2 with it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailChannel {
    File(PathBuf),
    Smtp { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsChannel {
    File(PathBuf),
    Http(String),
}

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub public_url: String,
    pub secret: Vec<u8>,
    pub country: Country,
    pub email: EmailChannel,
    pub email_from: String,
    pub sms: SmsChannel,
    pub email_rate: u32,
    pub sms_rate: u32,
    pub client_rate: u32,
    pub trusted_proxies: Vec<IpAddr>,
    pub receipt_secret: Option<String>,
    /// With it, `/metrics` needs `Authorization: Bearer` with it; without,
    /// it answers loopback and the trusted proxies only.
    pub metrics_token: Option<String>,
    pub admin: Option<(String, String)>,
    /// How many sign-ups may wait for the database before new ones get 503.
    pub signup_queue: usize,
    /// How long a process keeps a claimed message before another may take it over.
    pub lease_ms: i64,
    /// Personal data of the vaccinated and withdrawn is erased after this long.
    pub retention_ms: i64,
    /// Several processes share one port (STANDBY_REUSE_PORT=1).
    pub reuse_port: bool,
    /// SQLite: how much write-ahead log `serve` lays out at start (MiB).
    pub sqlite_wal_mb: u32,
    /// Centres' quiet hours unless a centre has its own (`None`: none).
    pub quiet_hours: Option<standby_domain::schedule::QuietHours>,
    /// An offer stops inviting this long, beyond its response window, before it ends.
    pub travel_margin_ms: i64,
    /// Consecutive counted silences (within 14 days) after which a person is paused.
    pub pause_after_silences: i64,
    /// Invitations one person may get in any 24 hours.
    pub invitations_per_day: i64,
    /// Messages on their way at once per channel (still paced to the rate).
    pub email_in_flight: usize,
    pub sms_in_flight: usize,
}

impl Config {
    /// The default quiet hours as a centre shows them.
    pub fn quiet_hours_text(&self) -> String {
        self.quiet_hours
            .map(|q| q.to_text())
            .unwrap_or_else(|| "none".into())
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("country", &self.country)
            .finish_non_exhaustive()
    }
}

/// Reads a variable; unset and empty are the same.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_rate(
    env: Env,
    name: &'static str,
    default: u32,
    allow_zero: bool,
) -> Result<u32, ConfigError> {
    match env(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(0) if !allow_zero => Err(bad(name, "must be a whole number of at least 1")),
            Ok(n) if n <= 1_000_000 => Ok(n),
            _ => Err(bad(
                name,
                format!(
                    "{v:?} is not a whole number from {} to 1000000",
                    u32::from(!allow_zero)
                ),
            )),
        },
    }
}

fn parse_dir_or_url(value: &str) -> Option<Result<PathBuf, ()>> {
    value.strip_prefix("file:").map(|d| {
        if d.is_empty() {
            Err(())
        } else {
            Ok(PathBuf::from(d))
        }
    })
}

/// The SQLite file behind a `sqlite://PATH` URL (`None` for an in-memory one).
pub use standby_store::sqlite_file as sqlite_path;

impl Config {
    /// Builds the configuration. `secret_file` decides whether a missing
    /// STANDBY_SECRET may be generated and kept beside the SQLite file.
    pub fn load(
        listen: Option<String>,
        database: Option<String>,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let listen_raw = listen
            .or_else(|| env("STANDBY_LISTEN"))
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_raw.trim().parse().map_err(|_| {
            bad(
                "STANDBY_LISTEN",
                format!("{listen_raw:?} is not an address such as 127.0.0.1:8080"),
            )
        })?;
        let database_url = database
            .or_else(|| env("DATABASE_URL"))
            .unwrap_or_else(|| "sqlite://standby.db".into());
        let is_pg =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if !is_pg && sqlite_path(&database_url).is_none() {
            return Err(bad(
                "DATABASE_URL",
                "expected sqlite://PATH or postgres://…",
            ));
        }
        let public_url = env("STANDBY_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}"));
        let public_url = public_url.trim_end_matches('/').to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.contains(char::is_whitespace)
        {
            return Err(bad(
                "STANDBY_PUBLIC_URL",
                "must start with http:// or https://",
            ));
        }
        let secret = match (env("STANDBY_SECRET"), env("STANDBY_SECRET_FILE")) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "STANDBY_SECRET_FILE",
                    "set STANDBY_SECRET or STANDBY_SECRET_FILE, not both",
                ));
            }
            (Some(s), None) => long_secret("STANDBY_SECRET", s)?.into_bytes(),
            (None, Some(file)) => {
                let beside_db = matches!(
                    env("STANDBY_SECRET_FILE_BESIDE_DB").as_deref(),
                    Some("1") | Some("true")
                );
                secret_from_file(&file, &database_url, beside_db)?.into_bytes()
            }
            (None, None) if is_pg => {
                return Err(bad(
                    "STANDBY_SECRET",
                    "required with PostgreSQL (several instances must share it)",
                ));
            }
            (None, None) => load_or_create_secret(&database_url)?,
        };
        let receipt_secret = env("STANDBY_RECEIPT_SECRET")
            .map(|s| long_secret("STANDBY_RECEIPT_SECRET", s))
            .transpose()?;
        let metrics_token = env("STANDBY_METRICS_TOKEN")
            .map(|s| long_secret("STANDBY_METRICS_TOKEN", s))
            .transpose()?;
        let country = match env("STANDBY_COUNTRY") {
            None => Country::Be,
            Some(c) => {
                Country::parse(&c).ok_or_else(|| bad("STANDBY_COUNTRY", "must be BE or LU"))?
            }
        };
        let email_raw = env("STANDBY_EMAIL").unwrap_or_else(|| "file:outbox".into());
        let email = match parse_dir_or_url(&email_raw) {
            Some(Ok(dir)) => EmailChannel::File(dir),
            Some(Err(())) => {
                return Err(bad(
                    "STANDBY_EMAIL",
                    "file: needs a folder, as in file:outbox",
                ));
            }
            None if crate::notify::email::smtp_settings(&email_raw).is_ok() => {
                EmailChannel::Smtp { url: email_raw }
            }
            None => {
                let why = crate::notify::email::smtp_settings(&email_raw)
                    .err()
                    .unwrap_or_default();
                return Err(bad(
                    "STANDBY_EMAIL",
                    format!("expected file:DIR or smtp://[user:pass@]host:port ({why})"),
                ));
            }
        };
        let sms_raw = env("STANDBY_SMS").unwrap_or_else(|| "file:outbox".into());
        let sms = match parse_dir_or_url(&sms_raw) {
            Some(Ok(dir)) => SmsChannel::File(dir),
            Some(Err(())) => {
                return Err(bad(
                    "STANDBY_SMS",
                    "file: needs a folder, as in file:outbox",
                ));
            }
            None if (sms_raw.starts_with("http://") || sms_raw.starts_with("https://"))
                && reqwest::Url::parse(&sms_raw).is_ok() =>
            {
                SmsChannel::Http(sms_raw)
            }
            None => {
                return Err(bad(
                    "STANDBY_SMS",
                    "expected file:DIR or an http(s):// gateway URL",
                ));
            }
        };
        let email_from = env("STANDBY_EMAIL_FROM")
            .unwrap_or_else(|| "Standby <no-reply@standby.localhost>".into());
        if email_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(bad("STANDBY_EMAIL_FROM", "not a valid sender address"));
        }
        let trusted_proxies = match env("STANDBY_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>().map_err(|_| {
                        bad(
                            "STANDBY_TRUSTED_PROXIES",
                            format!("{s:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let admin = match (env("STANDBY_ADMIN_EMAIL"), env("STANDBY_ADMIN_PASSWORD")) {
            (Some(e), Some(p)) => {
                if standby_domain::Email::parse(&e).is_err() {
                    return Err(bad("STANDBY_ADMIN_EMAIL", "not a valid e-mail address"));
                }
                if p.chars().count() < 10 {
                    return Err(bad(
                        "STANDBY_ADMIN_PASSWORD",
                        "must be at least 10 characters",
                    ));
                }
                Some((e, p))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "STANDBY_ADMIN_PASSWORD",
                    "needed with STANDBY_ADMIN_EMAIL",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "STANDBY_ADMIN_EMAIL",
                    "needed with STANDBY_ADMIN_PASSWORD",
                ));
            }
        };
        Ok(Config {
            listen,
            database_url,
            public_url,
            secret,
            country,
            email,
            email_from,
            sms,
            email_rate: parse_rate(env, "STANDBY_EMAIL_RATE", 50, false)?,
            sms_rate: parse_rate(env, "STANDBY_SMS_RATE", 20, false)?,
            client_rate: parse_rate(env, "STANDBY_CLIENT_RATE", 20, true)?,
            trusted_proxies,
            receipt_secret,
            metrics_token,
            admin,
            signup_queue: parse_rate(env, "STANDBY_SIGNUP_QUEUE", 16_384, false)? as usize,
            lease_ms: i64::from(parse_rate(env, "STANDBY_LEASE_SECONDS", 60, false)?) * 1000,
            retention_ms: i64::from(parse_rate(env, "STANDBY_RETENTION_DAYS", 365, false)?)
                * 24
                * 3600
                * 1000,
            reuse_port: match env("STANDBY_REUSE_PORT").as_deref() {
                None | Some("0") | Some("false") => false,
                Some("1") | Some("true") => true,
                Some(_) => return Err(bad("STANDBY_REUSE_PORT", "must be 1 or 0")),
            },
            // A demo or a small centre needs no log laid out: only an
            // operator expecting a launch-day surge asks for one (DEPLOY.md).
            sqlite_wal_mb: parse_rate(env, "STANDBY_SQLITE_WAL_MB", 0, true)?,
            quiet_hours: match env("STANDBY_QUIET_HOURS") {
                None => Some(standby_domain::schedule::QuietHours::DEFAULT),
                Some(v) => standby_domain::schedule::QuietHours::parse(&v).map_err(|why| {
                    bad(
                        "STANDBY_QUIET_HOURS",
                        format!("{why}; expected HH:MM-HH:MM or none"),
                    )
                })?,
            },
            travel_margin_ms: i64::from(parse_rate(env, "STANDBY_TRAVEL_MARGIN_MINUTES", 0, true)?)
                * 60_000,
            pause_after_silences: i64::from(parse_rate(
                env,
                "STANDBY_PAUSE_AFTER_SILENCES",
                3,
                false,
            )?),
            invitations_per_day: i64::from(parse_rate(
                env,
                "STANDBY_INVITATIONS_PER_DAY",
                3,
                false,
            )?),
            email_in_flight: parse_rate(env, "STANDBY_EMAIL_IN_FLIGHT", 8, false)? as usize,
            sms_in_flight: parse_rate(env, "STANDBY_SMS_IN_FLIGHT", 8, false)? as usize,
        })
    }
}

/// Secrets shorter than this are refused: the national IDs' keyed hash and
/// every signature are only as strong as their key.
pub const MIN_SECRET_BYTES: usize = 32;

fn long_secret(name: &'static str, value: String) -> Result<String, ConfigError> {
    if value.len() >= MIN_SECRET_BYTES {
        Ok(value)
    } else {
        Err(bad(
            name,
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes (it has {}); `openssl rand -base64 32` makes one",
                value.len()
            ),
        ))
    }
}

/// The secret kept in `file` (its first line), refused when the file lies in
/// the SQLite database's folder, where a copy of that folder would carry
/// the key with the hashes it protects, unless `beside_db`.
fn secret_from_file(
    file: &str,
    database_url: &str,
    beside_db: bool,
) -> Result<String, ConfigError> {
    let name = "STANDBY_SECRET_FILE";
    let path = std::path::Path::new(file);
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(name, format!("cannot read {file:?}: {e}")))?;
    if !beside_db && let Some(db) = sqlite_path(database_url) {
        let folder = |p: &std::path::Path| {
            std::path::absolute(p)
                .ok()
                .and_then(|a| a.parent().map(std::path::Path::to_path_buf))
                .map(|d| d.canonicalize().unwrap_or(d))
        };
        if folder(path).is_some() && folder(path) == folder(&db) {
            return Err(bad(
                name,
                "lies in the database's folder, so a copy of that folder holds the key with the hashes it protects; keep it elsewhere, or set STANDBY_SECRET_FILE_BESIDE_DB=1",
            ));
        }
    }
    long_secret(name, text.lines().next().unwrap_or("").trim().to_string())
}

/// Without STANDBY_SECRET, SQLite deployments keep a generated key in
/// `PATH.secret` beside the database, created once, readable by the owner only.
fn load_or_create_secret(database_url: &str) -> Result<Vec<u8>, ConfigError> {
    let db =
        sqlite_path(database_url).ok_or_else(|| bad("DATABASE_URL", "expected sqlite://PATH"))?;
    let mut file = db.clone().into_os_string();
    file.push(".secret");
    let file = PathBuf::from(file);
    match std::fs::read_to_string(&file) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(bad(
                "STANDBY_SECRET",
                format!(
                    "{} is too short; delete it or set STANDBY_SECRET",
                    file.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(bad(
                "STANDBY_SECRET",
                format!("cannot read {}: {e}", file.display()),
            ));
        }
    }
    let secret = crate::security::random_secret();
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            bad(
                "DATABASE_URL",
                format!("cannot create {}: {e}", parent.display()),
            )
        })?;
    }
    let kept = create_private_once(&file, &secret).map_err(|e| {
        bad(
            "STANDBY_SECRET",
            format!("cannot write {}: {e}", file.display()),
        )
    })?;
    match kept {
        Some(theirs) => Ok(theirs.into_bytes()),
        None => {
            tracing::warn!(path = %file.display(), "STANDBY_SECRET is not set: generated one and kept it beside the database; back it up with the database");
            Ok(secret.into_bytes())
        }
    }
}

/// Writes `content` to `path` unless another process (several may share one
/// SQLite file, started together) got there first: then answers what that
/// one wrote, `None` when ours was kept. The content goes to a private file
/// of this process's first, synced, and is then linked to `path`, which
/// fails if `path` exists; so `path` is never seen half-written, and every
/// process ends with the one secret.
fn create_private_once(path: &std::path::Path, content: &str) -> std::io::Result<Option<String>> {
    static TRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let attempt = TRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{attempt}.new", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // Left by an earlier process of this number that stopped half-way.
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, content)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(Some(std::fs::read_to_string(path)?.trim().to_string()))
        }
        Err(e) => Err(e),
    }
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut all = map.clone();
        all.entry("STANDBY_SECRET".into())
            .or_insert_with(|| "0123456789abcdef0123456789abcdef".into());
        Config::load(None, None, &move |k| all.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://standby.db");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.email, EmailChannel::File("outbox".into()));
        assert_eq!(c.sms, SmsChannel::File("outbox".into()));
        assert_eq!((c.email_rate, c.sms_rate, c.client_rate), (50, 20, 20));
        assert_eq!(c.country, Country::Be);
    }

    #[test]
    fn each_bad_setting_is_named() {
        for (var, value) in [
            ("STANDBY_LISTEN", "nowhere"),
            ("DATABASE_URL", "mysql://x"),
            ("STANDBY_PUBLIC_URL", "ftp://x"),
            ("STANDBY_SECRET", "short"),
            ("STANDBY_COUNTRY", "FR"),
            ("STANDBY_EMAIL", "pigeon://x"),
            ("STANDBY_EMAIL", "smtp://host-without-port"),
            ("STANDBY_SMS", "carrier-pigeon"),
            ("STANDBY_EMAIL_RATE", "0"),
            ("STANDBY_SMS_RATE", "-3"),
            ("STANDBY_CLIENT_RATE", "lots"),
            ("STANDBY_TRUSTED_PROXIES", "10.0.0.1,proxy"),
            ("STANDBY_SECRET", "0123456789abcdef0123456789abcde"),
            ("STANDBY_RECEIPT_SECRET", "0123456789abcdef0123456789abcde"),
            ("STANDBY_METRICS_TOKEN", "0123456789abcdef"),
            ("STANDBY_SQLITE_WAL_MB", "lots"),
            ("STANDBY_QUIET_HOURS", "21:00"),
            ("STANDBY_QUIET_HOURS", "21:00-21:00"),
            ("STANDBY_PAUSE_AFTER_SILENCES", "0"),
            ("STANDBY_INVITATIONS_PER_DAY", "many"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.setting, var, "{var}={value}: {err}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn secrets_of_32_bytes_or_more_are_taken() {
        let key = "0123456789abcdef0123456789abcdef";
        let c = load(&[
            ("STANDBY_SECRET", key),
            ("STANDBY_RECEIPT_SECRET", key),
            ("STANDBY_METRICS_TOKEN", key),
        ])
        .unwrap();
        assert_eq!(c.secret, key.as_bytes());
        assert_eq!(c.receipt_secret.as_deref(), Some(key));
        assert_eq!(c.metrics_token.as_deref(), Some(key));
        // No write-ahead log laid out unless the operator asks.
        assert_eq!(c.sqlite_wal_mb, 0);
    }

    #[test]
    fn the_secret_file_is_refused_beside_the_database_unless_insisted_on() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let key = "a-secret-kept-apart-0123456789abcdef";
        let beside = dir.path().join("key");
        let apart = elsewhere.path().join("key");
        std::fs::write(&beside, format!("{key}\n")).unwrap();
        std::fs::write(&apart, format!("{key}\n")).unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let with = |vars: Vec<(&'static str, String)>| {
            let map: HashMap<&str, String> = vars.into_iter().collect();
            Config::load(None, Some(url.clone()), &move |k| map.get(k).cloned())
        };
        let c = with(vec![("STANDBY_SECRET_FILE", apart.display().to_string())]).unwrap();
        assert_eq!(c.secret, key.as_bytes());
        let err = with(vec![("STANDBY_SECRET_FILE", beside.display().to_string())]).unwrap_err();
        assert_eq!(err.setting, "STANDBY_SECRET_FILE");
        assert!(err.to_string().contains("database's folder"), "{err}");
        let c = with(vec![
            ("STANDBY_SECRET_FILE", beside.display().to_string()),
            ("STANDBY_SECRET_FILE_BESIDE_DB", "1".into()),
        ])
        .unwrap();
        assert_eq!(c.secret, key.as_bytes());
        // Both ways at once, a missing file, or a short key: refused, named.
        for vars in [
            vec![
                ("STANDBY_SECRET_FILE", apart.display().to_string()),
                ("STANDBY_SECRET", key.to_string()),
            ],
            vec![("STANDBY_SECRET_FILE", "/nonexistent/key".to_string())],
        ] {
            assert_eq!(with(vars).unwrap_err().setting, "STANDBY_SECRET_FILE");
        }
        std::fs::write(&apart, "short\n").unwrap();
        let err = with(vec![("STANDBY_SECRET_FILE", apart.display().to_string())]).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        // Nothing was generated beside the database.
        assert!(!dir.path().join("s.db.secret").exists());
    }

    #[test]
    fn admin_needs_both_halves() {
        assert_eq!(
            load(&[("STANDBY_ADMIN_EMAIL", "admin@example.be")])
                .unwrap_err()
                .setting,
            "STANDBY_ADMIN_PASSWORD"
        );
        assert_eq!(
            load(&[("STANDBY_ADMIN_PASSWORD", "long enough pw")])
                .unwrap_err()
                .setting,
            "STANDBY_ADMIN_EMAIL"
        );
        let err = load(&[
            ("STANDBY_ADMIN_EMAIL", "nope"),
            ("STANDBY_ADMIN_PASSWORD", "long enough pw"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "STANDBY_ADMIN_EMAIL");
        assert!(
            load(&[
                ("STANDBY_ADMIN_EMAIL", "a@b.be"),
                ("STANDBY_ADMIN_PASSWORD", "long enough pw")
            ])
            .unwrap()
            .admin
            .is_some()
        );
    }

    #[test]
    fn postgres_needs_a_secret() {
        let err = Config::load(None, Some("postgres://localhost/x".into()), &|_| None).unwrap_err();
        assert_eq!(err.setting, "STANDBY_SECRET");
    }

    #[test]
    fn channels_and_limits() {
        let c = load(&[
            ("STANDBY_EMAIL", "smtp://user:pw@127.0.0.1:2525"),
            ("STANDBY_SMS", "http://127.0.0.1:9000/sms"),
            ("STANDBY_CLIENT_RATE", "0"),
            ("STANDBY_TRUSTED_PROXIES", "127.0.0.1, ::1"),
        ])
        .unwrap();
        assert!(matches!(c.email, EmailChannel::Smtp { .. }));
        assert_eq!(c.sms, SmsChannel::Http("http://127.0.0.1:9000/sms".into()));
        assert_eq!(c.client_rate, 0);
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn secret_is_generated_once_beside_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let a = Config::load(None, Some(url.clone()), &|_| None)
            .unwrap()
            .secret;
        let b = Config::load(None, Some(url), &|_| None).unwrap().secret;
        assert_eq!(a, b);
        assert!(dir.path().join("s.db.secret").exists());
    }

    #[test]
    fn processes_started_together_keep_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.db.secret");
        // The secrets several processes generated at once, each trying to
        // keep its own: all end with the first one kept.
        let kept: Vec<String> = std::thread::scope(|scope| {
            let tries: Vec<_> = (0..8)
                .map(|i| {
                    let file = &file;
                    scope.spawn(move || {
                        let mine = format!("{i:0>40}");
                        create_private_once(file, &mine).unwrap().unwrap_or(mine)
                    })
                })
                .collect();
            tries.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert!(kept.iter().all(|k| *k == on_disk), "{kept:?} {on_disk}");
        // Nothing left beside it but the secret itself.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.db.secret"]);
    }
}
