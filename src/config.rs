//! Configuration: the environment plus the appservice registration, validated at load.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ruma::{
    OwnedServerName, OwnedUserId, ServerName, UserId,
    api::appservice::{Namespaces, Registration},
};

pub use self::registration::{
    CompiledNamespaces, NamespaceSet, generate_puppet_registration, generate_registration,
};
use self::registration::{check_namespaces, load_puppet_registration, load_registration};
use crate::secret::Secret;

mod file;
mod registration;

pub use file::{ConfigFile, generate_config};

/// Why the configuration could not be loaded; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required environment variable is unset or empty.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// An environment variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file (`--config`) could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registration file could not be read or parsed.
    #[error("appservice registration {path}: {reason}")]
    Registration {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The appservice registration Synapse loaded, with its tokens kept secret.
#[derive(Debug, Clone)]
pub struct AppserviceRegistration {
    /// `id`.
    pub id: String,
    /// `url`: where Synapse reaches the bridge.
    pub url: Option<String>,
    /// `as_token`: the bridge's credential towards Synapse.
    pub as_token: Secret,
    /// `hs_token`: Synapse's credential towards the bridge.
    pub hs_token: Secret,
    /// `sender_localpart`.
    pub sender_localpart: String,
    /// `namespaces`.
    pub namespaces: Namespaces,
    /// `receive_ephemeral`.
    pub receive_ephemeral: bool,
}

impl From<Registration> for AppserviceRegistration {
    fn from(r: Registration) -> Self {
        Self {
            id: r.id,
            url: r.url,
            as_token: Secret::new(r.as_token),
            hs_token: Secret::new(r.hs_token),
            sender_localpart: r.sender_localpart,
            namespaces: r.namespaces,
            receive_ephemeral: r.receive_ephemeral,
        }
    }
}

/// Browser origins allowed by CORS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all.
    #[default]
    None,
    /// `*`: any origin (credentials are bearer tokens, never cookies, so this is safe).
    Any,
    /// These origins only.
    List(Vec<http::HeaderValue>),
}

/// Everything the service needs to run. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres connection URL (may hold a password).
    pub database_url: Secret,
    /// Client-server base URL of the homeserver.
    pub synapse_url: String,
    /// The homeserver's server name.
    pub server_name: OwnedServerName,
    /// The appservice registration Synapse loaded.
    pub registration: AppserviceRegistration,
    /// Where the HTTP server listens.
    pub listen_addr: SocketAddr,
    /// Bearer token of `/internal/*`.
    pub gateway_secret: Secret,
    /// HS256 secret of user JWTs.
    pub jwt_secret: Option<Secret>,
    /// NATS server; `None` selects the in-process bus.
    pub nats_url: Option<String>,
    /// Per-room presence throttle window.
    pub presence_throttle: Duration,
    /// Browser origins allowed by CORS (`CORS_ALLOWED_ORIGINS`, comma-separated, or `*`).
    pub cors_origins: CorsOrigins,
    /// Dead letters older than this many days are deleted (`DEAD_LETTER_RETENTION_DAYS`).
    pub dead_letter_retention_days: u32,
    /// How often agents' presence is set again in Synapse (`AGENT_PRESENCE_REFRESH_SECS`).
    pub agent_presence_refresh: Duration,
    /// The registration through which the bridge sends as the homeserver's own users
    /// (`PUPPET_REGISTRATION`); `None` disables sending as users.
    pub puppet: Option<PuppetRegistration>,
    /// Messages a user (or an agent) may send per minute through the API
    /// (`MESSAGE_RATE_PER_MINUTE`).
    pub message_rate_per_minute: u32,
    /// The API's other rate limits, per minute.
    pub rates: Rates,
    /// The largest file a user may upload, in bytes (`MEDIA_MAX_BYTES`).
    pub media_max_bytes: u64,
    /// Channels a user (not an admin) may create through the messaging API: private ones
    /// and microDAO ones (`CHANNELS_PER_USER`).
    pub channels_per_user: u32,
    /// What this instance does (`BRIDGE_ROLE`, or `serve --role`).
    pub role: Role,
    /// The JetStream stream of the outbox's events.
    pub stream: StreamConfig,
    /// Published outbox rows are deleted after this many hours (`OUTBOX_RETENTION_HOURS`).
    pub outbox_retention_hours: u32,
    /// Where `/metrics` is served instead of `listen_addr` (`METRICS_ADDR`).
    pub metrics_addr: Option<SocketAddr>,
}

/// Rate limits of the API, each per minute (a sliding window, counted per instance);
/// beyond one, 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Messages one user (or agent) may send into one channel
    /// (`USER_CHANNEL_RATE_PER_MINUTE`).
    pub messages_per_user_in_channel: u32,
    /// Messages a channel may receive from everyone together (`CHANNEL_RATE_PER_MINUTE`):
    /// far above one user's, so that one noisy user does not silence a channel.
    pub messages_per_channel: u32,
    /// Edits, reactions (and taking them back) and deletions of a user
    /// (`ACTION_RATE_PER_MINUTE`).
    pub actions_per_user: u32,
    /// Invitations a user may send (`INVITE_RATE_PER_MINUTE`).
    pub invitations_per_user: u32,
    /// Channels a user may create (`CHANNEL_CREATE_RATE_PER_MINUTE`).
    pub channels_per_user: u32,
    /// Searches of a user (`SEARCH_RATE_PER_MINUTE`).
    pub searches_per_user: u32,
    /// Files a user may upload (`MEDIA_UPLOADS_PER_MINUTE`); each is a message too, and
    /// counts against the message limits as well.
    pub uploads_per_user: u32,
}

/// What an instance does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Everything: the appservice (Synapse's transactions), the outbox relay, the
    /// workers, the API and WebSockets.
    #[default]
    All,
    /// The REST API and WebSockets only, reading Postgres and consuming the bus; any
    /// number of these beside the one instance in Synapse's registration.
    Api,
}

impl Role {
    /// `all` or `api`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "all" => Some(Self::All),
            "api" => Some(Self::Api),
            _ => None,
        }
    }
}

/// The JetStream stream the relay publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// `NATS_STREAM` (default `CITY_EVENTS`).
    pub name: String,
    /// How long events are kept (`NATS_STREAM_MAX_AGE_HOURS`, default 168).
    pub max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped (`NATS_DUPLICATE_WINDOW_SECS`,
    /// default 120).
    pub duplicate_window: Duration,
}

/// The second registration: a non-exclusive namespace of every local user, no URL, whose
/// `as_token` lets the bridge act as the user (double puppeting).
#[derive(Debug, Clone)]
pub struct PuppetRegistration {
    /// `id`.
    pub id: String,
    /// `as_token`.
    pub as_token: Secret,
    /// `namespaces.users`, compiled: the users the bridge may act as.
    pub users: NamespaceSet,
}

impl Config {
    /// Loads the configuration from the process environment over `file`: a variable that
    /// is set (not empty) wins over the file's value, and `role` (`serve --role`) over both.
    pub fn from_env_and_file(file: &ConfigFile, role: Option<&str>) -> Result<Self, ConfigError> {
        let env = over_file(|name| std::env::var(name).ok(), file);
        Self::from_lookup(|name| match (name, role) {
            ("BRIDGE_ROLE", Some(role)) => Some(role.to_owned()),
            _ => env(name),
        })
    }

    /// Loads the configuration from `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));

        let database_url = required("DATABASE_URL")?;
        let synapse_url = required("SYNAPSE_URL")?.trim_end_matches('/').to_owned();
        if !(synapse_url.starts_with("http://") || synapse_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "SYNAPSE_URL",
                reason: format!("{synapse_url:?} is not an http(s) URL"),
            });
        }
        let server_name = ServerName::parse(required("MATRIX_SERVER_NAME")?).map_err(|e| {
            ConfigError::Invalid {
                name: "MATRIX_SERVER_NAME",
                reason: e.to_string(),
            }
        })?;
        let gateway_secret = required("MATRIX_GATEWAY_SECRET")?;

        let listen_addr = match (get("LISTEN_ADDR"), get("MATRIX_GATEWAY_PORT")) {
            (Some(addr), _) => addr.parse().map_err(|e| ConfigError::Invalid {
                name: "LISTEN_ADDR",
                reason: format!("{addr:?}: {e}"),
            })?,
            (None, Some(port)) => {
                let port: u16 = port.parse().map_err(|e| ConfigError::Invalid {
                    name: "MATRIX_GATEWAY_PORT",
                    reason: format!("{port:?}: {e}"),
                })?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 7025)),
        };

        let presence_throttle = match get("ROOM_PRESENCE_THROTTLE_MS") {
            Some(ms) => Duration::from_millis(ms.parse().map_err(|e| ConfigError::Invalid {
                name: "ROOM_PRESENCE_THROTTLE_MS",
                reason: format!("{ms:?}: {e}"),
            })?),
            None => Duration::from_millis(3000),
        };

        let path = PathBuf::from(
            get("APPSERVICE_REGISTRATION").unwrap_or_else(|| "./registration.yaml".to_owned()),
        );
        let registration = load_registration(&path)?;
        check_namespaces(&registration, &server_name).map_err(|reason| {
            ConfigError::Registration {
                path: path.clone(),
                reason,
            }
        })?;

        let cors_origins = match get("CORS_ALLOWED_ORIGINS") {
            Some(value) => parse_cors(&value)?,
            None => CorsOrigins::None,
        };

        let dead_letter_retention_days = match get("DEAD_LETTER_RETENTION_DAYS") {
            Some(days) => {
                days.parse()
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "DEAD_LETTER_RETENTION_DAYS",
                        reason: format!("{days:?} is not a whole number of days above 0"),
                    })?
            }
            None => 30,
        };

        let agent_presence_refresh = match get("AGENT_PRESENCE_REFRESH_SECS") {
            Some(secs) => Duration::from_secs(
                secs.parse()
                    .ok()
                    .filter(|s| (1..=25).contains(s))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "AGENT_PRESENCE_REFRESH_SECS",
                        reason: format!(
                            "{secs:?}: must be 1 to 25 (Synapse times users out after 30 s)"
                        ),
                    })?,
            ),
            None => Duration::from_secs(20),
        };

        let puppet = match get("PUPPET_REGISTRATION") {
            Some(path) => Some(load_puppet_registration(
                &PathBuf::from(path),
                &server_name,
            )?),
            None => None,
        };
        let message_rate_per_minute = match get("MESSAGE_RATE_PER_MINUTE") {
            Some(rate) => {
                rate.parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "MESSAGE_RATE_PER_MINUTE",
                        reason: format!("{rate:?} is not a whole number above 0"),
                    })?
            }
            None => 60,
        };

        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name,
                        reason: format!("{v:?} is not a whole number above 0"),
                    }),
                None => Ok(default),
            }
        };
        let channels_per_user = u32::try_from(number("CHANNELS_PER_USER", 20)?).unwrap_or(u32::MAX);
        let rate = |name: &'static str, default: u64| -> Result<u32, ConfigError> {
            Ok(u32::try_from(number(name, default)?).unwrap_or(u32::MAX))
        };
        let rates = Rates {
            messages_per_user_in_channel: rate("USER_CHANNEL_RATE_PER_MINUTE", 30)?,
            messages_per_channel: rate("CHANNEL_RATE_PER_MINUTE", 600)?,
            actions_per_user: rate("ACTION_RATE_PER_MINUTE", 120)?,
            invitations_per_user: rate("INVITE_RATE_PER_MINUTE", 30)?,
            channels_per_user: rate("CHANNEL_CREATE_RATE_PER_MINUTE", 5)?,
            searches_per_user: rate("SEARCH_RATE_PER_MINUTE", 30)?,
            uploads_per_user: rate("MEDIA_UPLOADS_PER_MINUTE", 10)?,
        };
        let media_max_bytes = number("MEDIA_MAX_BYTES", 20 * 1024 * 1024)?;
        let role = match get("BRIDGE_ROLE") {
            Some(role) => Role::parse(&role).ok_or_else(|| ConfigError::Invalid {
                name: "BRIDGE_ROLE",
                reason: format!("{role:?}: must be all or api"),
            })?,
            None => Role::All,
        };
        let stream = StreamConfig {
            name: get("NATS_STREAM").unwrap_or_else(|| "CITY_EVENTS".to_owned()),
            max_age: Duration::from_secs(number("NATS_STREAM_MAX_AGE_HOURS", 168)? * 3600),
            duplicate_window: Duration::from_secs(number("NATS_DUPLICATE_WINDOW_SECS", 120)?),
        };
        let outbox_retention_hours =
            u32::try_from(number("OUTBOX_RETENTION_HOURS", 24)?).unwrap_or(u32::MAX);

        let metrics_addr = get("METRICS_ADDR")
            .map(|addr| {
                addr.parse().map_err(|e| ConfigError::Invalid {
                    name: "METRICS_ADDR",
                    reason: format!("{addr:?}: {e}"),
                })
            })
            .transpose()?;

        Ok(Self {
            database_url: Secret::new(database_url),
            synapse_url,
            server_name,
            registration: registration.into(),
            listen_addr,
            gateway_secret: Secret::new(gateway_secret),
            jwt_secret: get("JWT_SECRET").map(Secret::new),
            nats_url: get("NATS_URL"),
            presence_throttle,
            cors_origins,
            dead_letter_retention_days,
            agent_presence_refresh,
            puppet,
            message_rate_per_minute,
            rates,
            media_max_bytes,
            channels_per_user,
            role,
            stream,
            outbox_retention_hours,
            metrics_addr,
        })
    }

    /// The appservice's own user, `@<sender_localpart>:<server>`.
    pub fn sender(&self) -> OwnedUserId {
        UserId::parse_with_server_name(
            self.registration.sender_localpart.as_str(),
            &self.server_name,
        )
        .expect("sender_localpart was validated at load")
    }
}

/// `env` where it gives a value that is not empty, else `file`.
fn over_file<'a>(
    env: impl Fn(&str) -> Option<String> + 'a,
    file: &'a ConfigFile,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| file.get(name))
    }
}

/// `*`, or a comma-separated list of `http(s)://host[:port]` origins.
fn parse_cors(value: &str) -> Result<CorsOrigins, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "CORS_ALLOWED_ORIGINS",
        reason,
    };
    let origins: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if origins == ["*"] {
        return Ok(CorsOrigins::Any);
    }
    let mut list = Vec::with_capacity(origins.len());
    for origin in origins {
        if origin == "*" {
            return Err(invalid("`*` must be the only value".to_owned()));
        }
        let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
        let header = http::HeaderValue::from_str(origin)
            .ok()
            .filter(|_| scheme_ok);
        match header {
            Some(header) if !origin.ends_with('/') => list.push(header),
            _ => {
                return Err(invalid(format!(
                    "{origin:?} is not an origin like https://city.example.org (no path, no trailing /)"
                )));
            }
        }
    }
    Ok(if list.is_empty() {
        CorsOrigins::None
    } else {
        CorsOrigins::List(list)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_registration(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A tiny temp-file helper so the tests need no extra crate.
    mod tempfile_path {
        use std::path::PathBuf;

        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "city-bridge-reg-{}-{}.yaml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn env(reg: &std::path::Path) -> impl Fn(&str) -> Option<String> {
        let reg = reg.display().to_string();
        move |name| {
            Some(match name {
                "DATABASE_URL" => "postgres://bridge:db-password@localhost/x".to_owned(),
                "SYNAPSE_URL" => "http://127.0.0.1:8008/".to_owned(),
                "MATRIX_SERVER_NAME" => "example.org".to_owned(),
                "MATRIX_GATEWAY_SECRET" => "gateway-secret-value".to_owned(),
                "APPSERVICE_REGISTRATION" => reg.clone(),
                _ => return None,
            })
        }
    }

    #[test]
    fn the_environment_overrides_the_config_file() {
        let file = write_registration(&generate_registration(
            &ServerName::parse("example.org").unwrap(),
            "http://127.0.0.1:7025",
        ));
        let config_file = ConfigFile::parse(&format!(
            "homeserver:\n  url: http://synapse.internal:8008\n  server_name: example.org\n\
             appservice:\n  registration: {}\n  listen_addr: 127.0.0.1:9000\n\
             database:\n  url: postgres://from-file/x\n\
             secrets:\n  gateway_secret: from-file\n\
             messaging:\n  message_rate_per_minute: 5\n",
            file.0.display()
        ))
        .unwrap();
        let only_file = Config::from_lookup(over_file(|_| None, &config_file)).unwrap();
        assert_eq!(only_file.synapse_url, "http://synapse.internal:8008");
        assert_eq!(only_file.listen_addr.port(), 9000);
        assert_eq!(only_file.message_rate_per_minute, 5);
        assert_eq!(only_file.database_url.expose(), "postgres://from-file/x");

        let env = |name: &str| match name {
            "MESSAGE_RATE_PER_MINUTE" => Some("7".to_owned()),
            "DATABASE_URL" => Some("postgres://from-env/x".to_owned()),
            "LISTEN_ADDR" => Some(String::new()),
            _ => None,
        };
        let both = Config::from_lookup(over_file(env, &config_file)).unwrap();
        assert_eq!(both.message_rate_per_minute, 7);
        assert_eq!(both.database_url.expose(), "postgres://from-env/x");
        assert_eq!(both.listen_addr.port(), 9000, "an empty variable is unset");

        let bad = ConfigFile::parse("messaging:\n  message_rate_per_minute: -1\n").unwrap();
        let err = Config::from_lookup(over_file(env_without_rate(&file.0), &bad)).unwrap_err();
        assert!(err.to_string().contains("MESSAGE_RATE_PER_MINUTE"), "{err}");
    }

    fn env_without_rate(reg: &std::path::Path) -> impl Fn(&str) -> Option<String> {
        let env = env(reg);
        move |name| {
            (name != "MESSAGE_RATE_PER_MINUTE")
                .then(|| env(name))
                .flatten()
        }
    }

    #[test]
    fn generated_registration_loads_and_is_anchored() {
        let server = ServerName::parse("example.org").unwrap();
        let text = generate_registration(&server, "http://127.0.0.1:7025");
        assert!(
            text.contains(r"regex: '^@agent_.*:example\.org$'"),
            "{text}"
        );
        assert!(text.contains(r"regex: '^#city_.*:example\.org$'"), "{text}");
        let file = write_registration(&text);
        let config = Config::from_lookup(env(&file.0)).unwrap();
        assert!(config.registration.receive_ephemeral);
        assert_eq!(config.synapse_url, "http://127.0.0.1:8008");
        assert_eq!(config.sender().as_str(), "@city-bridge:example.org");
        assert_eq!(config.listen_addr.port(), 7025);
        let ns = CompiledNamespaces::new(&config.registration.namespaces);
        assert!(ns.users.is_exclusive_match("@agent_sofia:example.org"));
        assert!(!ns.users.is_match("@agent_sofia:exampleXorg"));
        assert!(!ns.users.is_match("@alice:example.org"));
        // The city's Space, and nothing else outside #city_*.
        assert!(ns.aliases.is_exclusive_match("#city:example.org"));
        assert!(!ns.aliases.is_match("#cityhall:example.org"));
        assert!(!ns.aliases.is_match("#city:example.org.evil"));
        // Two generated files never share tokens.
        assert_ne!(
            text,
            generate_registration(&server, "http://127.0.0.1:7025")
        );
    }

    #[test]
    fn cors_star_and_bad_origins() {
        let file = write_registration(&generate_registration(
            &ServerName::parse("example.org").unwrap(),
            "http://x",
        ));
        let with = |cors: &'static str| {
            let base = env(&file.0);
            Config::from_lookup(move |name| {
                if name == "CORS_ALLOWED_ORIGINS" {
                    Some(cors.to_owned())
                } else {
                    base(name)
                }
            })
        };
        assert_eq!(with("*").unwrap().cors_origins, CorsOrigins::Any);
        assert!(matches!(
            with("https://a.org, http://b.org:8080").unwrap().cors_origins,
            CorsOrigins::List(l) if l.len() == 2
        ));
        let err = with("city.org").unwrap_err().to_string();
        assert!(
            err.starts_with("environment variable CORS_ALLOWED_ORIGINS is invalid"),
            "{err}"
        );
        assert!(with("*, https://a.org").is_err());
    }

    #[test]
    fn debug_shows_no_secret() {
        let file = write_registration(&generate_registration(
            &ServerName::parse("example.org").unwrap(),
            "http://x",
        ));
        let config = Config::from_lookup(env(&file.0)).unwrap();
        let printed = format!("{config:?}");
        for secret in [
            config.registration.as_token.expose(),
            config.registration.hs_token.expose(),
            config.gateway_secret.expose(),
            config.database_url.expose(),
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn missing_variable_is_named() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable DATABASE_URL is required"
        );
    }

    #[test]
    fn namespaces_must_cover_the_configured_server() {
        let other = ServerName::parse("other.org").unwrap();
        let file = write_registration(&generate_registration(&other, "http://x"));
        let err = Config::from_lookup(env(&file.0)).unwrap_err().to_string();
        assert!(
            err.contains("namespaces.users must claim @agent_* on example.org"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_registration_says_what_to_set() {
        let path = std::path::Path::new("/nonexistent/registration.yaml");
        let err = Config::from_lookup(env(path)).unwrap_err().to_string();
        assert!(err.contains("set APPSERVICE_REGISTRATION"), "{err}");
    }
}
