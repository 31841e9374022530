//! The city's Space: it exists at `#city:<server>`, is in the room directory, and lists
//! every public city room (and every microDAO's sub-space its public channels).

use ruma::api::client::{directory::get_room_visibility, room::Visibility as RoomVisibility};

use super::Finding;
use crate::{
    config::{CompiledNamespaces, Config},
    domain::{CITY_SPACE_ALIAS_LOCALPART, space_alias},
    matrix::Homeserver,
    rooms::space_children,
    store::Store,
};

const CHECK: &str = "city space";

/// Most room slugs named in a finding.
const NAMED: usize = 10;

pub(super) async fn city_space(
    homeserver: &Homeserver,
    config: &Config,
    store: Option<&Store>,
) -> Finding {
    let alias = space_alias(None, &config.server_name);
    let namespaces = CompiledNamespaces::new(&config.registration.namespaces);
    if !namespaces.aliases.is_match(alias.as_str()) {
        return Finding::wrong(
            CHECK,
            format!(
                "the registration does not reserve {alias}: the bridge cannot make the city's Space"
            ),
            format!(
                "add to the registration's namespaces.aliases (then restart Synapse and the bridge):\n  \
                 - exclusive: true\n    regex: '^#{CITY_SPACE_ALIAS_LOCALPART}:{}$'\nand let the bridge \
                 list it in the room directory (room_list_publication_rules):\n  - user_id: \"{}\"\n    \
                 alias: \"{alias}\"\n    action: allow",
                regex::escape(config.server_name.as_str()),
                config.sender()
            ),
        );
    }
    let space = match homeserver.resolve_alias(&alias).await {
        Ok(Some(space)) => space,
        Ok(None) => {
            return Finding::wrong(
                CHECK,
                format!("{alias} does not exist yet"),
                "run the bridge (its reconciler makes the Space at start), or ask for a backfill: \
                 POST /internal/city/matrix/backfill with MATRIX_GATEWAY_SECRET",
            );
        }
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot resolve {alias}: {e}"),
                "see the homeserver's log",
            );
        }
    };
    let listed = match homeserver
        .room_state(&space)
        .await
        .map(|state| space_children(&state))
    {
        Ok(listed) => listed,
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot read the Space {alias} ({space}): {e}"),
                format!(
                    "{alias} must be the bridge's own Space; delete the alias if someone else made it, \
                     and the bridge makes its own"
                ),
            );
        }
    };
    match homeserver
        .send(get_room_visibility::v3::Request::new(space.clone()), None)
        .await
    {
        Ok(response) if response.visibility == RoomVisibility::Public => {}
        Ok(_) => {
            return Finding::wrong(
                CHECK,
                format!("{alias} ({space}) is not in the room directory"),
                format!(
                    "allow the bridge to list it in homeserver.yaml:\n  room_list_publication_rules:\n    \
                     - user_id: \"{}\"\n      alias: \"{alias}\"\n      action: allow\nthen ask for a \
                     backfill, or list it by hand: PUT /_matrix/client/v3/directory/list/room/{space}",
                    config.sender()
                ),
            );
        }
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot read the directory entry of {alias}: {e}"),
                "see the homeserver's log",
            );
        }
    }
    let Some(store) = store else {
        return Finding::ok(
            CHECK,
            format!(
                "{alias} ({space}) is in the room directory and lists {} rooms",
                listed.len()
            ),
        );
    };
    let (members, spaces) = match tokio::try_join!(store.space_members(false), store.spaces()) {
        Ok(read) => read,
        Err(e) => {
            return Finding::wrong(
                CHECK,
                format!("cannot read city rooms: {e}"),
                "check DATABASE_URL",
            );
        }
    };
    // Each Space's children, read once.
    let mut children = std::collections::HashMap::from([(space.clone(), listed)]);
    let mut missing = Vec::new();
    for member in members.iter().filter(|m| m.listed) {
        let home = match &member.microdao_id {
            None => Some(space.clone()),
            Some(id) => spaces
                .iter()
                .find(|(m, _)| m.as_deref() == Some(id))
                .map(|(_, s)| s.clone()),
        };
        let Some(home) = home else {
            missing.push(member.slug.to_string());
            continue;
        };
        if !children.contains_key(&home) {
            let read = homeserver
                .room_state(&home)
                .await
                .map(|state| space_children(&state))
                .unwrap_or_default();
            children.insert(home.clone(), read);
        }
        let in_home = children[&home].contains(&member.matrix_room_id);
        let home_in_city = home == space || children[&space].contains(&home);
        if !(in_home && home_in_city) {
            missing.push(member.slug.to_string());
        }
    }
    let public = members.iter().filter(|m| m.listed).count();
    if missing.is_empty() {
        Finding::ok(
            CHECK,
            format!(
                "{alias} ({space}) is in the room directory and lists every public city room \
                 ({public}, in {} Spaces)",
                children.len()
            ),
        )
    } else {
        let more = missing.len().saturating_sub(NAMED);
        missing.truncate(NAMED);
        Finding::wrong(
            CHECK,
            format!(
                "{alias} ({space}) does not list {} of {public} public city rooms: {}{}",
                missing.len() + more,
                missing.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            "wait for the bridge's reconciler (it lists rooms as they get their Matrix room), \
             or ask for a backfill, which repairs the Spaces from their state in Matrix: \
             POST /internal/city/matrix/backfill with MATRIX_GATEWAY_SECRET",
        )
    }
}
