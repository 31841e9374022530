//! `city-bridge check`: is the homeserver configured right for this bridge? Each finding
//! says what was seen and, when it is wrong, what to put in `homeserver.yaml`. The same
//! findings are logged at start-up and shown in `/readyz`.

mod space;

use std::time::Duration;

use ruma::{
    api::client::{
        directory::set_room_visibility, presence::get_presence, room::Visibility as RoomVisibility,
    },
    presence::PresenceState,
};
use serde::Serialize;

use crate::{
    config::Config,
    domain::Visibility,
    matrix::{Homeserver, HomeserverError, RetryPolicy},
    store::Store,
};

/// One thing checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub check: &'static str,
    /// Whether it is as the bridge needs it.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// What to change, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn wrong(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check against the homeserver of `config` (the bridge should be running at
/// its registered URL for the ping to come back). Directory publication is probed with a
/// public city room of `store` that has its Matrix room, else with a room of the probe's
/// own, removed again.
pub async fn run(config: &Config, store: Option<&Store>) -> Vec<Finding> {
    let homeserver = Homeserver::new(
        &config.synapse_url,
        config.registration.as_token.clone(),
        RetryPolicy::ONCE,
    );
    let mut findings = Vec::new();
    let version = server_version(&config.synapse_url).await;
    match homeserver.whoami().await {
        Ok(user) => findings.push(Finding::ok(
            "homeserver",
            format!(
                "{} answers ({}) and accepts the registration's as_token as {user}",
                config.synapse_url,
                version.as_deref().unwrap_or("version not disclosed")
            ),
        )),
        Err(e) if e.is_unavailable() => {
            findings.push(Finding::wrong(
                "homeserver",
                format!("{} does not answer: {e}", config.synapse_url),
                "start Synapse, or set SYNAPSE_URL to its client-server address",
            ));
            return findings;
        }
        Err(e) => {
            findings.push(Finding::wrong(
                "homeserver",
                format!("the homeserver refuses the registration's as_token: {e}"),
                format!(
                    "add the registration file to homeserver.yaml and restart Synapse:\n  \
                     app_service_config_files:\n    - /path/to/registration.yaml    # id: {}",
                    config.registration.id
                ),
            ));
            return findings;
        }
    }
    findings.push(ping(&homeserver, config).await);
    findings.push(match store {
        Some(store) => publication(&homeserver, store, config).await,
        None => publication_probe(&homeserver, config).await,
    });
    findings.push(space::city_space(&homeserver, config, store).await);
    findings.push(presence(&homeserver, config).await);
    findings.push(puppet(config).await);
    findings
}

/// Synapse's version, from its unauthenticated admin endpoint (absent behind some proxies).
async fn server_version(base: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("{base}/_synapse/admin/v1/server_version"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
    body["server_version"]
        .as_str()
        .map(|v| format!("Synapse {v}"))
}

async fn ping(homeserver: &Homeserver, config: &Config) -> Finding {
    let url = config.registration.url.as_deref().unwrap_or("(no url)");
    match tokio::time::timeout(
        Duration::from_secs(15),
        homeserver.ping(&config.registration.id),
    )
    .await
    {
        Ok(Ok(rtt)) => Finding::ok(
            "appservice ping",
            format!("Synapse reached the bridge at {url} with the hs_token in {rtt:?}"),
        ),
        Ok(Err(e)) => Finding::wrong(
            "appservice ping",
            format!("Synapse could not complete the round trip to {url}: {e}"),
            format!(
                "the bridge must be running and reachable from Synapse at the registration's url \
                 ({url}); Synapse must have loaded this same registration file (same tokens) — \
                 restart Synapse after changing it"
            ),
        ),
        Err(_) => Finding::wrong(
            "appservice ping",
            format!("no answer in 15 s from Synapse pinging {url}"),
            "check that Synapse can open connections to the bridge's url",
        ),
    }
}

/// Asks Synapse to list an existing public city room in the directory, as the bridge's
/// sender: allowed, it is (or stays) listed — nothing else changes; refused, the
/// publication rules deny the bridge. Without such a room (a fresh install), a room of the
/// probe's own is made and removed again.
async fn publication(homeserver: &Homeserver, store: &Store, config: &Config) -> Finding {
    const CHECK: &str = "room directory";
    let rooms = match store.list_rooms(false).await {
        Ok(rooms) => rooms,
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot read city rooms: {e}"),
                "check DATABASE_URL",
            );
        }
    };
    let Some((room, room_id)) = rooms.iter().find_map(|r| {
        (r.visibility == Visibility::Public && r.archived_at.is_none())
            .then(|| r.matrix_room_id.clone().map(|id| (r, id)))
            .flatten()
    }) else {
        return publication_probe(homeserver, config).await;
    };
    let request = set_room_visibility::v3::Request::new(room_id.clone(), RoomVisibility::Public);
    match homeserver.send(request, None).await {
        Ok(_) => Finding::ok(
            CHECK,
            format!(
                "the bridge may list #city_ rooms (probed with {} {room_id})",
                room.slug
            ),
        ),
        Err(HomeserverError::Refused { status, .. }) if status == http::StatusCode::FORBIDDEN => {
            refused_publication(config)
        }
        Err(e) => Finding::wrong(
            CHECK,
            format!("the probe failed: {e}"),
            "see the homeserver's log",
        ),
    }
}

/// Probes publication with a room of its own when no city room can serve: a room created
/// as the bridge's sender with a `#city_check-…` alias, then asked to be listed, as the
/// bridge lists city rooms. Whatever the answer, the room is unlisted, its alias deleted
/// and left again.
async fn publication_probe(homeserver: &Homeserver, config: &Config) -> Finding {
    use ruma::api::client::{alias::delete_alias, membership::leave_room, room::create_room};
    const CHECK: &str = "room directory";
    let localpart = format!("city_check-{:08x}", rand::random::<u32>());
    let Ok(alias) =
        ruma::OwnedRoomAliasId::try_from(format!("#{localpart}:{}", config.server_name))
    else {
        return Finding::wrong(
            CHECK,
            "cannot make a probe alias",
            "check MATRIX_SERVER_NAME",
        );
    };
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some(localpart);
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.name = Some("city-bridge check (removed at once)".to_owned());
    let room_id = match homeserver.send(request, None).await {
        Ok(created) => created.room_id,
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot create a room to probe with: {e}"),
                "see the homeserver's log",
            );
        }
    };
    let listed = homeserver
        .send(
            set_room_visibility::v3::Request::new(room_id.clone(), RoomVisibility::Public),
            None,
        )
        .await;
    // Nothing left behind: unlisted, alias deleted, left.
    let unlisted = homeserver
        .send(
            set_room_visibility::v3::Request::new(room_id.clone(), RoomVisibility::Private),
            None,
        )
        .await;
    let unaliased = homeserver
        .send(delete_alias::v3::Request::new(alias.clone()), None)
        .await;
    let left = homeserver
        .send(leave_room::v3::Request::new(room_id.clone()), None)
        .await;
    if let Some(e) = [unlisted.err(), unaliased.err(), left.err()]
        .into_iter()
        .flatten()
        .next()
    {
        tracing::warn!(%room_id, %alias, error = %e, "the publication probe was not fully removed");
    }
    match listed {
        Ok(_) => Finding::ok(
            CHECK,
            format!(
                "the bridge may list #city_ rooms (probed with a room of its own, {alias}, \
                 removed again: no city room has its Matrix room yet)"
            ),
        ),
        Err(HomeserverError::Refused { status, .. }) if status == http::StatusCode::FORBIDDEN => {
            refused_publication(config)
        }
        Err(e) => Finding::wrong(
            CHECK,
            format!("the probe failed: {e}"),
            "see the homeserver's log",
        ),
    }
}

/// Synapse's rules deny the bridge the room directory.
fn refused_publication(config: &Config) -> Finding {
    Finding::wrong(
        "room directory",
        "Synapse refuses to list city rooms in the room directory: public city rooms \
         are created but never appear there",
        format!(
            "allow the bridge's rooms in homeserver.yaml (the default denies \
             everything):\n  room_list_publication_rules:\n    - user_id: \"{}\"\n      \
             alias: \"#city_*\"\n      action: allow",
            config.sender()
        ),
    )
}

/// Presence is disabled in Synapse when setting it changes nothing.
async fn presence(homeserver: &Homeserver, config: &Config) -> Finding {
    const CHECK: &str = "presence";
    let sender = config.sender();
    if let Err(e) = homeserver
        .set_presence(&sender, ruma::presence::PresenceState::Online, None)
        .await
    {
        return Finding::wrong(
            CHECK,
            format!("cannot set presence: {e}"),
            "see the homeserver's log",
        );
    }
    match homeserver
        .send(get_presence::v3::Request::new(sender.clone()), None)
        .await
    {
        Ok(response) if response.presence == PresenceState::Online => {
            Finding::ok(CHECK, "presence is enabled")
        }
        Ok(_) => Finding::wrong(
            CHECK,
            "presence is disabled: rooms will show nobody online",
            "enable it in homeserver.yaml:\n  presence:\n    enabled: true",
        ),
        Err(e) => Finding::wrong(
            CHECK,
            format!("cannot read presence: {e}"),
            "see the homeserver's log",
        ),
    }
}

/// The puppet registration is loaded when Synapse accepts its `as_token`.
async fn puppet(config: &Config) -> Finding {
    const CHECK: &str = "puppet registration";
    let Some(puppet) = &config.puppet else {
        return Finding::wrong(
            CHECK,
            "PUPPET_REGISTRATION is not set: sending as users is disabled (503 puppeting_disabled)",
            "city-bridge generate-puppet-registration --server-name <name> > puppet-registration.yaml; \
             add it to app_service_config_files and set PUPPET_REGISTRATION",
        );
    };
    let client = Homeserver::new(
        &config.synapse_url,
        puppet.as_token.clone(),
        RetryPolicy::ONCE,
    );
    match client.whoami().await {
        Ok(user) => Finding::ok(
            CHECK,
            format!(
                "Synapse knows the puppet registration {} (sender {user})",
                puppet.id
            ),
        ),
        Err(e) => Finding::wrong(
            CHECK,
            format!("Synapse does not accept the puppet registration's as_token: {e}"),
            "add the puppet registration file to app_service_config_files and restart Synapse",
        ),
    }
}
