//! The registrations: reading `registration.yaml` and the puppet registration, checking
//! their namespaces, compiling them, and generating new ones.

use std::path::PathBuf;

use rand::{Rng, distr::Alphanumeric};
use regex::RegexSet;
use ruma::{
    ServerName, UserId,
    api::appservice::{Namespace, Namespaces, Registration},
};

use super::{ConfigError, PuppetRegistration};
use crate::secret::Secret;

pub(super) fn load_registration(path: &PathBuf) -> Result<Registration, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Registration {
        path: path.clone(),
        reason: format!("cannot read it ({e}); set APPSERVICE_REGISTRATION"),
    })?;
    serde_norway::from_str(&text).map_err(|e| ConfigError::Registration {
        path: path.clone(),
        reason: e.to_string(),
    })
}

pub(super) fn load_puppet_registration(
    path: &PathBuf,
    server: &ServerName,
) -> Result<PuppetRegistration, ConfigError> {
    let registration = load_registration(path)?;
    let invalid = |reason: String| ConfigError::Registration {
        path: path.clone(),
        reason,
    };
    if registration.url.is_some() {
        return Err(invalid(
            "url must be null: Synapse must push nothing to the puppet registration".to_owned(),
        ));
    }
    if registration.as_token.is_empty() {
        return Err(invalid("as_token must not be empty".to_owned()));
    }
    let users = NamespaceSet::compile(&registration.namespaces.users)
        .map_err(|e| invalid(format!("namespaces.users has an invalid regex: {e}")))?;
    if !users.is_match(&format!("@probe:{server}"))
        || users.is_exclusive_match(&format!("@probe:{server}"))
    {
        return Err(invalid(format!(
            "namespaces.users must claim every user of {server}, not exclusively \
             (regex: '^@.*:{}$', exclusive: false)",
            regex::escape(server.as_str())
        )));
    }
    Ok(PuppetRegistration {
        id: registration.id,
        as_token: Secret::new(registration.as_token),
        users,
    })
}

/// Checks that the registration claims `@agent_*` and `#city_*` on `server` exclusively,
/// and that its sender is a valid user there.
pub(super) fn check_namespaces(
    registration: &Registration,
    server: &ServerName,
) -> Result<(), String> {
    UserId::parse_with_server_name(registration.sender_localpart.as_str(), server)
        .map_err(|e| format!("sender_localpart is not a valid localpart: {e}"))?;
    if registration.hs_token.is_empty() || registration.as_token.is_empty() {
        return Err("as_token and hs_token must not be empty".to_owned());
    }
    let probes = [
        (
            "users",
            &registration.namespaces.users,
            format!("@agent_probe:{server}"),
        ),
        (
            "aliases",
            &registration.namespaces.aliases,
            format!("#city_probe:{server}"),
        ),
    ];
    for (kind, namespaces, probe) in probes {
        let compiled = NamespaceSet::compile(namespaces)
            .map_err(|e| format!("namespaces.{kind} has an invalid regex: {e}"))?;
        if !compiled.is_exclusive_match(&probe) {
            let expected = if kind == "users" { "@agent_" } else { "#city_" };
            return Err(format!(
                "namespaces.{kind} must claim {expected}* on {server} exclusively \
                 (e.g. regex: '^{}.*:{}$', exclusive: true)",
                regex::escape(expected),
                regex::escape(server.as_str()),
            ));
        }
    }
    Ok(())
}

/// One namespace list of a registration, compiled once.
#[derive(Debug, Clone)]
pub struct NamespaceSet {
    all: RegexSet,
    exclusive: RegexSet,
}

impl NamespaceSet {
    /// Compiles the regexes of `namespaces`.
    pub fn compile(namespaces: &[Namespace]) -> Result<Self, regex::Error> {
        let all = RegexSet::new(namespaces.iter().map(|n| n.regex.as_str()))?;
        let exclusive = RegexSet::new(
            namespaces
                .iter()
                .filter(|n| n.exclusive)
                .map(|n| n.regex.as_str()),
        )?;
        Ok(Self { all, exclusive })
    }

    /// Whether any namespace matches `id`.
    pub fn is_match(&self, id: &str) -> bool {
        self.all.is_match(id)
    }

    /// Whether an exclusive namespace matches `id`.
    pub fn is_exclusive_match(&self, id: &str) -> bool {
        self.exclusive.is_match(id)
    }
}

/// The compiled user and alias namespaces of the registration.
#[derive(Debug, Clone)]
pub struct CompiledNamespaces {
    /// `namespaces.users`.
    pub users: NamespaceSet,
    /// `namespaces.aliases`.
    pub aliases: NamespaceSet,
}

impl CompiledNamespaces {
    /// Compiles the namespaces of a registration that [`Config`] already validated.
    pub fn new(namespaces: &Namespaces) -> Self {
        Self {
            users: NamespaceSet::compile(&namespaces.users).expect("validated at load"),
            aliases: NamespaceSet::compile(&namespaces.aliases).expect("validated at load"),
        }
    }
}

/// The puppet registration for `server_name`: every local user, not exclusively, no URL,
/// fresh random tokens. The bridge uses its `as_token` to act as users of the homeserver.
pub fn generate_puppet_registration(server_name: &ServerName) -> String {
    let server = regex::escape(server_name.as_str());
    format!(
        "# city-bridge puppet registration for {server_name}: lets the bridge send as the\n\
         # homeserver's own users (double puppeting). Give it to Synapse\n\
         # (app_service_config_files, next to the bridge's registration) and to the bridge\n\
         # (PUPPET_REGISTRATION). Synapse pushes nothing to it. The tokens are secrets.\n\
         id: city-puppet\n\
         url: null\n\
         as_token: {as_token:?}\n\
         hs_token: {hs_token:?}\n\
         sender_localpart: {sender:?}\n\
         rate_limited: false\n\
         namespaces:\n\
         \x20 users:\n\
         \x20   - exclusive: false\n\
         \x20     regex: '^@.*:{server}$'\n\
         \x20 aliases: []\n\
         \x20 rooms: []\n",
        as_token = random_token(),
        hs_token = random_token(),
        sender = format!("city-puppet-{}", &random_token()[..8].to_lowercase()),
    )
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// A registration.yaml for `server_name` with the bridge at `url` and fresh random tokens.
pub fn generate_registration(server_name: &ServerName, url: &str) -> String {
    let token = random_token;
    let server = regex::escape(server_name.as_str());
    // Written by hand rather than serialised so the file keeps its comments.
    format!(
        "# city-bridge appservice registration for {server_name}.\n\
         # Give this file to Synapse (app_service_config_files) and to the bridge\n\
         # (APPSERVICE_REGISTRATION). The tokens are secrets.\n\
         id: city-bridge\n\
         url: {url:?}\n\
         as_token: {as_token:?}\n\
         hs_token: {hs_token:?}\n\
         sender_localpart: city-bridge\n\
         rate_limited: false\n\
         receive_ephemeral: true\n\
         namespaces:\n\
         \x20 users:\n\
         \x20   - exclusive: true\n\
         \x20     regex: '^@agent_.*:{server}$'\n\
         \x20 aliases:\n\
         \x20   - exclusive: true\n\
         \x20     regex: '^#city_.*:{server}$'\n\
         \x20   # The city's Space.\n\
         \x20   - exclusive: true\n\
         \x20     regex: '^#city:{server}$'\n\
         \x20 rooms: []\n",
        as_token = token(),
        hs_token = token(),
    )
}
