//! The optional YAML configuration file (`--config`): the same settings as the
//! environment, grouped the way bridge operators know from mautrix bridges. Each key maps
//! onto one environment variable and is validated by the same code; a variable that is set
//! wins over the file.

use std::{collections::HashMap, path::Path};

use serde_norway::Value;

use super::ConfigError;

/// One key of the file: where it sits, the variable it stands for, and what the example
/// file says of it.
struct Key {
    section: &'static str,
    name: &'static str,
    env: &'static str,
    example: &'static str,
    doc: &'static str,
}

/// Every key the file may hold, in the order `generate-config` prints them.
const KEYS: &[Key] = &[
    Key {
        section: "homeserver",
        name: "url",
        env: "SYNAPSE_URL",
        example: "http://127.0.0.1:8008",
        doc: "Client-server URL of Synapse, as the bridge reaches it.",
    },
    Key {
        section: "homeserver",
        name: "server_name",
        env: "MATRIX_SERVER_NAME",
        example: "localhost",
        doc: "The homeserver's server name (the part after the colon of user ids).",
    },
    Key {
        section: "appservice",
        name: "registration",
        env: "APPSERVICE_REGISTRATION",
        example: "./registration.yaml",
        doc: "The registration Synapse loaded (city-bridge generate-registration).",
    },
    Key {
        section: "appservice",
        name: "puppet_registration",
        env: "PUPPET_REGISTRATION",
        example: "./puppet-registration.yaml",
        doc: "Lets the bridge send as the homeserver's users (city-bridge \
              generate-puppet-registration); leave empty to refuse sending as users.",
    },
    Key {
        section: "appservice",
        name: "listen_addr",
        env: "LISTEN_ADDR",
        example: "0.0.0.0:7025",
        doc: "Where the appservice, the API and the WebSockets listen.",
    },
    Key {
        section: "appservice",
        name: "role",
        env: "BRIDGE_ROLE",
        example: "all",
        doc: "all: receive Synapse's transactions and serve; api: serve the API and \
              WebSockets only.",
    },
    Key {
        section: "database",
        name: "url",
        env: "DATABASE_URL",
        example: "postgres://city_bridge:password@127.0.0.1:5432/city_bridge",
        doc: "Postgres; the migrations run at start-up.",
    },
    Key {
        section: "secrets",
        name: "gateway_secret",
        env: "MATRIX_GATEWAY_SECRET",
        example: "change-me-internal-secret",
        doc: "Bearer token of /internal/* for the platform's services.",
    },
    Key {
        section: "secrets",
        name: "jwt_secret",
        env: "JWT_SECRET",
        example: "change-me-jwt-secret",
        doc: "HS256 secret of the UI's user JWTs; leave empty to refuse every user token.",
    },
    Key {
        section: "nats",
        name: "url",
        env: "NATS_URL",
        example: "",
        doc: "NATS with JetStream; empty: the bus stays in the process.",
    },
    Key {
        section: "nats",
        name: "stream",
        env: "NATS_STREAM",
        example: "CITY_EVENTS",
        doc: "The JetStream stream of messaging.> and city.room.> events.",
    },
    Key {
        section: "nats",
        name: "stream_max_age_hours",
        env: "NATS_STREAM_MAX_AGE_HOURS",
        example: "168",
        doc: "How long the stream keeps events.",
    },
    Key {
        section: "nats",
        name: "duplicate_window_secs",
        env: "NATS_DUPLICATE_WINDOW_SECS",
        example: "120",
        doc: "Window in which JetStream drops a re-published event.",
    },
    Key {
        section: "api",
        name: "cors_allowed_origins",
        env: "CORS_ALLOWED_ORIGINS",
        example: "[]",
        doc: "Browser origins allowed by CORS: a list, or \"*\".",
    },
    Key {
        section: "api",
        name: "metrics_addr",
        env: "METRICS_ADDR",
        example: "",
        doc: "Serve /metrics here instead of on listen_addr.",
    },
    Key {
        section: "messaging",
        name: "message_rate_per_minute",
        env: "MESSAGE_RATE_PER_MINUTE",
        example: "60",
        doc: "Messages a user (or an agent) may send per minute.",
    },
    Key {
        section: "messaging",
        name: "user_channel_rate_per_minute",
        env: "USER_CHANNEL_RATE_PER_MINUTE",
        example: "30",
        doc: "Messages a user may send into one channel per minute.",
    },
    Key {
        section: "messaging",
        name: "channel_rate_per_minute",
        env: "CHANNEL_RATE_PER_MINUTE",
        example: "600",
        doc: "Messages a channel may receive per minute, from everyone together.",
    },
    Key {
        section: "messaging",
        name: "action_rate_per_minute",
        env: "ACTION_RATE_PER_MINUTE",
        example: "120",
        doc: "Edits, reactions (and taking them back) and deletions of a user per minute.",
    },
    Key {
        section: "messaging",
        name: "invite_rate_per_minute",
        env: "INVITE_RATE_PER_MINUTE",
        example: "30",
        doc: "Invitations a user may send per minute.",
    },
    Key {
        section: "messaging",
        name: "channel_create_rate_per_minute",
        env: "CHANNEL_CREATE_RATE_PER_MINUTE",
        example: "5",
        doc: "Channels a user may create per minute.",
    },
    Key {
        section: "messaging",
        name: "search_rate_per_minute",
        env: "SEARCH_RATE_PER_MINUTE",
        example: "30",
        doc: "Searches of a user per minute.",
    },
    Key {
        section: "messaging",
        name: "media_uploads_per_minute",
        env: "MEDIA_UPLOADS_PER_MINUTE",
        example: "10",
        doc: "Files a user may upload per minute (each counts as a message too).",
    },
    Key {
        section: "messaging",
        name: "media_max_bytes",
        env: "MEDIA_MAX_BYTES",
        example: "20971520",
        doc: "The largest file a user may upload, in bytes (20 MiB).",
    },
    Key {
        section: "messaging",
        name: "channels_per_user",
        env: "CHANNELS_PER_USER",
        example: "20",
        doc: "Channels (private, or of a microDAO) a user who is not an admin may create.",
    },
    Key {
        section: "presence",
        name: "room_throttle_ms",
        env: "ROOM_PRESENCE_THROTTLE_MS",
        example: "3000",
        doc: "At most one room.presence per room in this window.",
    },
    Key {
        section: "presence",
        name: "agent_refresh_secs",
        env: "AGENT_PRESENCE_REFRESH_SECS",
        example: "20",
        doc: "How often agents' presence is set again in Synapse (1 to 25).",
    },
    Key {
        section: "retention",
        name: "dead_letter_days",
        env: "DEAD_LETTER_RETENTION_DAYS",
        example: "30",
        doc: "Dead letters older than this are deleted.",
    },
    Key {
        section: "retention",
        name: "outbox_hours",
        env: "OUTBOX_RETENTION_HOURS",
        example: "24",
        doc: "Published outbox rows are deleted after this.",
    },
];

/// A loaded configuration file: the values it gives, by environment variable name.
#[derive(Default)]
pub struct ConfigFile {
    values: HashMap<&'static str, String>,
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::File {
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read it ({e})")))?;
        Self::parse(&text).map_err(invalid)
    }

    /// Parses a file's text; an unknown section or key is refused by name (a typo would
    /// otherwise silently fall back to a default).
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let mut values = HashMap::new();
        let sections = match root {
            Value::Null => return Ok(Self { values }),
            Value::Mapping(sections) => sections,
            _ => return Err("the file must be a mapping of sections".to_owned()),
        };
        for (section, entries) in sections {
            let section = section
                .as_str()
                .ok_or("a section name must be a string")?
                .to_owned();
            if !KEYS.iter().any(|k| k.section == section) {
                return Err(format!("unknown section {section:?}"));
            }
            let entries = match entries {
                Value::Null => continue,
                Value::Mapping(entries) => entries,
                _ => return Err(format!("{section} must be a mapping")),
            };
            for (name, value) in entries {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("a key of {section} must be a string"))?;
                let key = KEYS
                    .iter()
                    .find(|k| k.section == section && k.name == name)
                    .ok_or_else(|| format!("unknown key {section}.{name}"))?;
                if let Some(text) = scalar_text(&value)
                    .ok_or_else(|| format!("{section}.{name} must be a single value"))?
                {
                    values.insert(key.env, text);
                }
            }
        }
        Ok(Self { values })
    }

    /// The file's value for the environment variable `env`, if it gives one.
    pub fn get(&self, env: &str) -> Option<String> {
        self.values.get(env).cloned()
    }
}

/// A value as the environment would spell it; `None` inside for null (unset). A list is
/// joined with commas (CORS origins).
fn scalar_text(value: &Value) -> Option<Option<String>> {
    Some(match value {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Sequence(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.clone()),
                    Value::Number(n) => parts.push(n.to_string()),
                    _ => return None,
                }
            }
            (!parts.is_empty()).then(|| parts.join(","))
        }
        _ => return None,
    })
}

/// A commented example file with every key, printed by `city-bridge generate-config`.
pub fn generate_config() -> String {
    let mut out = String::from(
        "# city-bridge configuration (city-bridge serve --config <this file>).\n\
         # Every key has an environment variable, named beside it; a variable that is set\n\
         # overrides the file. Empty values are unset. Paths are relative to the working\n\
         # directory.\n",
    );
    let mut section = "";
    for key in KEYS {
        if key.section != section {
            section = key.section;
            out.push_str(&format!("\n{section}:\n"));
        }
        out.push_str(&format!("  # {} ({})\n", key.doc, key.env));
        let value = match key.example {
            "" => String::new(),
            "[]" => " []".to_owned(),
            v if v.parse::<u64>().is_ok() => format!(" {v}"),
            v => format!(" \"{v}\""),
        };
        out.push_str(&format!("  {}:{value}\n", key.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_gives_every_example_value() {
        let file = ConfigFile::parse(&generate_config()).unwrap();
        for key in KEYS {
            let expected = match key.example {
                "" | "[]" => None,
                v => Some(v.to_owned()),
            };
            assert_eq!(file.get(key.env), expected, "{}.{}", key.section, key.name);
        }
    }

    #[test]
    fn every_variable_has_one_key() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                KEYS[i + 1..]
                    .iter()
                    .all(|k| k.env != key.env && (k.section, k.name) != (key.section, key.name)),
                "{} appears twice",
                key.env
            );
        }
    }

    #[test]
    fn typos_are_refused_by_name() {
        assert_eq!(
            ConfigFile::parse("homeserver:\n  ulr: http://x\n")
                .err()
                .unwrap(),
            "unknown key homeserver.ulr"
        );
        assert_eq!(
            ConfigFile::parse("homserver:\n  url: http://x\n")
                .err()
                .unwrap(),
            "unknown section \"homserver\""
        );
        assert!(
            ConfigFile::parse("nats:\n  url: {a: 1}\n")
                .err()
                .unwrap()
                .contains("nats.url must be a single value")
        );
        assert!(ConfigFile::parse("- 1\n").is_err());
    }

    #[test]
    fn lists_join_and_nulls_are_unset() {
        let file = ConfigFile::parse(
            "api:\n  cors_allowed_origins: [https://a.example, https://b.example]\n\
             nats:\n  url: ~\n  stream_max_age_hours: 12\n",
        )
        .unwrap();
        assert_eq!(
            file.get("CORS_ALLOWED_ORIGINS").as_deref(),
            Some("https://a.example,https://b.example")
        );
        assert_eq!(file.get("NATS_URL"), None);
        assert_eq!(file.get("NATS_STREAM_MAX_AGE_HOURS").as_deref(), Some("12"));
        assert!(ConfigFile::parse("").unwrap().get("NATS_URL").is_none());
    }
}
