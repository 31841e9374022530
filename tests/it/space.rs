//! The city as a Matrix Space, against the real Synapse: `#city:<server>` lists every
//! public city room (each with its `m.space.parent`), a microDAO's channels sit in a
//! sub-space of their own, archiving and restoring take a room out and back, a backfill
//! rebuilds what is missing without making a second Space, and `check` reports it.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Bridge, GATEWAY_SECRET, MatrixUser, api, config_with, encode, env, eventually, jwt,
    start_synapse, stop_synapse, unique,
};

fn space_alias() -> String {
    format!("#city:{}", env().server_name)
}

fn admin() -> String {
    jwt("user:admin", &["admin"])
}

/// A public (or private) city room made through the API; its slug and Matrix room.
async fn create_room(name: &str, visibility: &str) -> (String, String) {
    let (status, room) = api(
        Method::POST,
        "/api/city/rooms",
        Some(&admin()),
        Some(json!({"name": format!("{name} {}", unique("")), "visibility": visibility})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    (
        room["slug"].as_str().unwrap().to_owned(),
        room["matrix_room_id"].as_str().unwrap().to_owned(),
    )
}

/// A channel of a microDAO made by a service; its slug and Matrix room.
async fn create_channel(microdao: &str, visibility: &str) -> (String, String) {
    let (status, channel) = api(
        Method::POST,
        "/api/messaging/channels",
        Some(GATEWAY_SECRET),
        Some(
            json!({"name": format!("Channel {}", unique("")), "microdao_id": microdao,
            "visibility": visibility}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    (
        channel["slug"].as_str().unwrap().to_owned(),
        channel["matrix_room_id"].as_str().unwrap().to_owned(),
    )
}

async fn backfill() -> Value {
    let (status, summary) = api(
        Method::POST,
        "/internal/city/matrix/backfill",
        Some(GATEWAY_SECRET),
        None,
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["failed"], json!([]), "{summary}");
    assert_eq!(summary["space"]["failed"], 0, "{summary}");
    assert!(summary["space"].get("error").is_none(), "{summary}");
    summary
}

/// Every room of the Space's hierarchy as a member of the Space sees it (all pages).
async fn hierarchy(user: &MatrixUser, space: &str) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/v1/rooms/{}/hierarchy?limit=50", encode(space));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", encode(from)));
        }
        let page = user.get(&path).await.expect("hierarchy");
        for room in page["rooms"].as_array().unwrap() {
            rooms.insert(room["room_id"].as_str().unwrap().to_owned());
        }
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => return rooms,
        }
    }
}

/// The rooms a Space lists now (its `m.space.child` events with a `via`), read as the
/// bridge's own user.
async fn children(space: &str) -> BTreeSet<String> {
    let state = MatrixUser::appservice()
        .get(&format!("/v3/rooms/{}/state", encode(space)))
        .await
        .expect("the Space's state");
    state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["type"] == "m.space.child"
                && e["content"]["via"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
        })
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect()
}

/// The `m.space.parent` of `space` in `room`, if any.
async fn parent(room: &str, space: &str) -> Option<Value> {
    MatrixUser::appservice()
        .get(&format!(
            "/v3/rooms/{}/state/m.space.parent/{}",
            encode(room),
            encode(space)
        ))
        .await
        .ok()
}

/// Every public city room with a Matrix room that is not archived (not the microDAOs').
async fn public_city_rooms(bridge: &Bridge) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT matrix_room_id FROM city_rooms WHERE visibility = 'public' \
         AND archived_at IS NULL AND matrix_room_id IS NOT NULL AND microdao_id IS NULL",
    )
    .fetch_all(bridge.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The Space lists every public city room, and `user` sees each in its hierarchy —
/// but for mappings to rooms Synapse does not have (tests of the index map made-up room
/// ids), which no hierarchy can show. What `user` sees.
async fn shows_every_public_room(
    bridge: &Bridge,
    user: &MatrixUser,
    space: &str,
) -> BTreeSet<String> {
    let public = public_city_rooms(bridge).await;
    let listed = children(space).await;
    let unlisted: Vec<_> = public.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "public city rooms not in the Space: {unlisted:?}"
    );
    let seen = hierarchy(user, space).await;
    for room in public.difference(&seen) {
        // 404 "Unknown room" for a room Synapse does not have.
        let known = user
            .get(&format!("/v3/directory/list/room/{}", encode(room)))
            .await;
        assert!(
            known.is_err(),
            "{room} exists but is not in the Space's hierarchy"
        );
    }
    assert!(!seen.is_empty());
    seen
}

async fn resolve(user: &MatrixUser, alias: &str) -> String {
    let found = user
        .get(&format!("/v3/directory/room/{}", encode(alias)))
        .await
        .unwrap_or_else(|e| panic!("{alias} resolves: {e:?}"));
    found["room_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_matrix_user_who_joins_the_city_space_sees_every_public_city_room() {
    let bridge = Bridge::start().await;
    let (_, agora) = create_room("Agora", "public").await;
    let (_, market) = create_room("Market", "public").await;
    let (_, hidden) = create_room("Back office", "private").await;
    let summary = backfill().await;
    let space = summary["space"]["matrix_room_id"]
        .as_str()
        .expect("the city has a Space")
        .to_owned();

    let alice = MatrixUser::register("alice").await;
    assert_eq!(alice.join(&space_alias()).await.expect("join #city"), space);
    let create = alice.state(&space, "m.room.create").await.unwrap();
    assert_eq!(create["type"], "m.space", "{create}");
    let name = alice.state(&space, "m.room.name").await.unwrap();
    assert_eq!(name["name"], "DAARION City");
    let history = alice
        .state(&space, "m.room.history_visibility")
        .await
        .unwrap();
    assert_eq!(history["history_visibility"], "world_readable");
    let join_rules = alice.state(&space, "m.room.join_rules").await.unwrap();
    assert_eq!(join_rules["join_rule"], "public");
    let directory = alice
        .get(&format!("/v3/directory/list/room/{}", encode(&space)))
        .await
        .unwrap();
    assert_eq!(directory["visibility"], "public");
    // The bridge owns it: a member cannot list rooms in it.
    let refused = alice
        .put(
            &format!(
                "/v3/rooms/{}/state/m.space.child/{}",
                encode(&space),
                encode(&hidden)
            ),
            json!({"via": [env().server_name]}),
        )
        .await
        .expect_err("a member may not change the Space");
    assert_eq!(refused.status, 403);

    let public = public_city_rooms(&bridge).await;
    assert!(public.contains(&agora) && public.contains(&market));
    let seen = shows_every_public_room(&bridge, &alice, &space).await;
    assert!(!seen.contains(&hidden), "a private room is listed");
    assert!(!children(&space).await.contains(&hidden));
    for room in [&agora, &market] {
        let parent = parent(room, &space).await.expect("m.space.parent");
        assert_eq!(parent["canonical"], true, "{parent}");
        assert_eq!(parent["via"], json!([env().server_name]), "{parent}");
    }
    assert_eq!(parent(&hidden, &space).await, None);

    // Idempotent: a second backfill sends nothing.
    let again = backfill().await;
    assert_eq!(again["space"]["matrix_room_id"], space.as_str());
    assert_eq!(
        (
            &again["space"]["children_added"],
            &again["space"]["children_removed"],
            &again["space"]["parents_added"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{again}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn new_rooms_join_the_space_archived_ones_leave_it_and_restored_ones_come_back() {
    let bridge = Bridge::start().await;
    let (slug, room) = create_room("Forum", "public").await;
    let alice = MatrixUser::register("alice").await;
    let space = alice.join(&space_alias()).await.expect("join #city");
    eventually("the new room is in the Space", || async {
        hierarchy(&alice, &space)
            .await
            .contains(&room)
            .then_some(())
    })
    .await;
    assert!(parent(&room, &space).await.is_some());

    let patch = |archived: bool| {
        let slug = slug.clone();
        async move {
            let (status, body) = api(
                Method::PATCH,
                &format!("/api/city/rooms/{slug}"),
                Some(&admin()),
                Some(json!({"archived": archived})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    patch(true).await;
    eventually("the archived room leaves the Space", || async {
        (!children(&space).await.contains(&room)).then_some(())
    })
    .await;
    assert!(!hierarchy(&alice, &space).await.contains(&room));
    // Withdrawn the Matrix way: the child's content is empty.
    let withdrawn = MatrixUser::appservice()
        .get(&format!(
            "/v3/rooms/{}/state/m.space.child/{}",
            encode(&space),
            encode(&room)
        ))
        .await
        .unwrap();
    assert_eq!(withdrawn, json!({}));

    patch(false).await;
    eventually("the restored room is back in the Space", || async {
        hierarchy(&alice, &space)
            .await
            .contains(&room)
            .then_some(())
    })
    .await;

    // A rename changes nothing in the Space.
    let (status, _) = api(
        Method::PATCH,
        &format!("/api/city/rooms/{slug}"),
        Some(&admin()),
        Some(json!({"name": "Forum renamed"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(children(&space).await.contains(&room));
    bridge.stop().await;
}

#[tokio::test]
async fn a_backfill_lists_rooms_made_before_the_space_and_adopts_the_space_of_its_alias() {
    let bridge = Bridge::start().await;
    let (slug, room) = create_room("Older", "public").await;
    let alice = MatrixUser::register("alice").await;
    let space = alice.join(&space_alias()).await.expect("join #city");
    eventually("the room is in the Space", || async {
        children(&space).await.contains(&room).then_some(())
    })
    .await;
    // As if the room had been made before the Space existed: taken out of it in Matrix,
    // its parent gone, and the bridge's memory of the Space and of the listing lost.
    let bot = MatrixUser::appservice();
    bot.put(
        &format!(
            "/v3/rooms/{}/state/m.space.child/{}",
            encode(&space),
            encode(&room)
        ),
        json!({}),
    )
    .await
    .unwrap();
    bot.put(
        &format!(
            "/v3/rooms/{}/state/m.space.parent/{}",
            encode(&room),
            encode(&space)
        ),
        json!({}),
    )
    .await
    .unwrap();
    sqlx::query("DELETE FROM city_spaces")
        .execute(bridge.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE city_rooms SET space_room_id = NULL WHERE slug = $1")
        .bind(&slug)
        .execute(bridge.pool())
        .await
        .unwrap();

    let summary = backfill().await;
    // The alias is the source of truth: the same Space, not a second one.
    assert_eq!(
        summary["space"]["matrix_room_id"],
        space.as_str(),
        "{summary}"
    );
    assert!(children(&space).await.contains(&room));
    let parent = parent(&room, &space).await.expect("m.space.parent again");
    assert_eq!(parent["canonical"], true);
    shows_every_public_room(&bridge, &alice, &space).await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM city_spaces WHERE matrix_room_id = $1")
            .bind(&space)
            .fetch_one(bridge.pool())
            .await
            .unwrap();
    assert_eq!(recorded, 1);

    // A restart makes no second Space either.
    bridge.stop().await;
    let bridge = Bridge::start().await;
    let (_, later) = create_room("Later", "public").await;
    eventually(
        "a room made after the restart is in the same Space",
        || async { children(&space).await.contains(&later).then_some(()) },
    )
    .await;
    assert_eq!(resolve(&alice, &space_alias()).await, space);
    bridge.stop().await;
}

#[tokio::test]
async fn a_microdao_s_public_channels_sit_in_its_own_sub_space_of_the_city() {
    let bridge = Bridge::start().await;
    let dao = unique("dao-");
    let (_, channel) = create_channel(&dao, "public").await;
    let (_, private) = create_channel(&dao, "private").await;
    let alice = MatrixUser::register("alice").await;
    let space = alice.join(&space_alias()).await.expect("join #city");

    let sub_alias = format!("#city_microdao.{dao}:{}", env().server_name);
    let sub = eventually("the microDAO's sub-space", || async {
        let found = alice
            .get(&format!("/v3/directory/room/{}", encode(&sub_alias)))
            .await
            .ok()?;
        Some(found["room_id"].as_str()?.to_owned())
    })
    .await;
    eventually(
        "the channel is in the sub-space, the sub-space in the city",
        || async {
            let city = children(&space).await;
            let listed = children(&sub).await;
            (city.contains(&sub) && listed.contains(&channel)).then_some(())
        },
    )
    .await;
    assert!(
        !children(&space).await.contains(&channel),
        "listed in the city itself"
    );
    assert!(
        !children(&sub).await.contains(&private),
        "a private channel is listed"
    );
    let create = alice.state(&sub, "m.room.create").await.unwrap();
    assert_eq!(create["type"], "m.space");
    assert_eq!(
        parent(&channel, &sub).await.expect("the channel's parent")["canonical"],
        true
    );
    assert!(
        parent(&sub, &space).await.is_some(),
        "the sub-space's parent"
    );
    let seen = hierarchy(&alice, &space).await;
    assert!(seen.contains(&sub) && seen.contains(&channel), "{seen:?}");
    assert!(!seen.contains(&private));

    // Any microDAO id, however written, gets a Space of its own.
    let odd = format!("ДАО: {}", unique(""));
    let (_, odd_channel) = create_channel(&odd, "public").await;
    let odd_sub = eventually("the odd microDAO's sub-space", || async {
        let spaces: Vec<(String, String)> =
            sqlx::query_as("SELECT microdao_id, matrix_room_id FROM city_spaces")
                .fetch_all(bridge.pool())
                .await
                .unwrap();
        spaces
            .into_iter()
            .find(|(m, _)| *m == odd)
            .map(|(_, room)| room)
    })
    .await;
    eventually("the odd channel in its sub-space", || async {
        children(&odd_sub)
            .await
            .contains(&odd_channel)
            .then_some(())
    })
    .await;
    let aliases = MatrixUser::appservice()
        .get(&format!("/v3/rooms/{}/aliases", encode(&odd_sub)))
        .await
        .unwrap();
    let alias = aliases["aliases"][0].as_str().unwrap();
    assert!(alias.starts_with("#city_microdao.sha256."), "{alias}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_room_made_while_synapse_is_down_joins_the_space_when_it_is_back() {
    let bridge = Bridge::start().await;
    let alice = MatrixUser::register("alice").await;
    let space = alice.join(&space_alias()).await.expect("join #city");
    stop_synapse().await;
    let (status, room) = api(
        Method::POST,
        "/api/city/rooms",
        Some(&admin()),
        Some(json!({"name": format!("Offline {}", unique(""))})),
    )
    .await;
    start_synapse().await;
    assert_eq!(
        status, 202,
        "the room is stored, its Matrix room pending: {room}"
    );
    let slug = room["slug"].as_str().unwrap().to_owned();
    let room_id = eventually("the pending room gets its Matrix room", || async {
        let (_, room) = api(Method::GET, &format!("/api/city/rooms/{slug}"), None, None).await;
        room["matrix_room_id"].as_str().map(ToOwned::to_owned)
    })
    .await;
    eventually("and is listed in the Space", || async {
        children(&space).await.contains(&room_id).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn check_reports_the_space_and_names_rooms_it_does_not_list() {
    let bridge = Bridge::start().await;
    let (slug, room) = create_room("Checked", "public").await;
    backfill().await;
    let config = config_with(&[]);
    let finding = |findings: Vec<city_bridge::check::Finding>| {
        findings
            .into_iter()
            .find(|f| f.check == "city space")
            .expect("a city space finding")
    };
    let space = finding(city_bridge::check::run(&config, Some(&bridge.state.store)).await);
    assert!(space.ok, "{space:#?}");
    assert!(space.detail.contains(&space_alias()), "{space:#?}");

    // Taken out of the Space behind the bridge's back: named, with the fix.
    let space_id = resolve(&MatrixUser::appservice(), &space_alias()).await;
    MatrixUser::appservice()
        .put(
            &format!(
                "/v3/rooms/{}/state/m.space.child/{}",
                encode(&space_id),
                encode(&room)
            ),
            json!({}),
        )
        .await
        .unwrap();
    let wrong = finding(city_bridge::check::run(&config, Some(&bridge.state.store)).await);
    assert!(!wrong.ok, "{wrong:#?}");
    assert!(wrong.detail.contains(&slug), "{wrong:#?}");
    assert!(
        wrong.fix.as_deref().unwrap().contains("backfill"),
        "{wrong:#?}"
    );
    backfill().await;
    assert!(finding(city_bridge::check::run(&config, Some(&bridge.state.store)).await).ok);

    // Taken out of the room directory: named, and a backfill puts it back.
    MatrixUser::appservice()
        .put(
            &format!("/v3/directory/list/room/{}", encode(&space_id)),
            json!({"visibility": "private"}),
        )
        .await
        .unwrap();
    let unlisted = finding(city_bridge::check::run(&config, Some(&bridge.state.store)).await);
    assert!(
        !unlisted.ok && unlisted.detail.contains("room directory"),
        "{unlisted:#?}"
    );
    let fix = unlisted.fix.as_deref().unwrap();
    assert!(fix.contains("room_list_publication_rules"), "{fix}");
    let summary = backfill().await;
    assert_eq!(summary["space"]["published"], 1, "{summary}");
    assert!(finding(city_bridge::check::run(&config, Some(&bridge.state.store)).await).ok);

    // A registration that does not reserve #city: no Space, and what to add.
    let text = std::fs::read_to_string(&env().registration).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let narrow: String = lines
        .iter()
        .enumerate()
        .filter(|(i, line)| {
            let space_entry = |l: &str| l.contains("'^#city:");
            !line.contains("The city's Space")
                && !space_entry(line)
                && !lines.get(i + 1).is_some_and(|next| space_entry(next))
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    assert!(!narrow.contains("'^#city:"), "{narrow}");
    let file = std::env::temp_dir().join(format!("{}.yaml", unique("narrow-registration-")));
    std::fs::write(&file, narrow).unwrap();
    let narrow_config = config_with(&[("APPSERVICE_REGISTRATION", file.to_str().unwrap())]);
    let refused = finding(city_bridge::check::run(&narrow_config, None).await);
    std::fs::remove_file(&file).unwrap();
    assert!(!refused.ok, "{refused:#?}");
    let fix = refused.fix.as_deref().unwrap();
    assert!(
        fix.contains("namespaces.aliases") && fix.contains("^#city:"),
        "{fix}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_deleted_space_alias_is_pointed_back_at_the_same_space() {
    let bridge = Bridge::start().await;
    let bot = MatrixUser::appservice();
    let alice = MatrixUser::register("alice").await;
    let space = alice.join(&space_alias()).await.expect("join #city");
    let delete_alias = || async {
        let deleted = reqwest::Client::new()
            .delete(format!(
                "{}/_matrix/client/v3/directory/room/{}",
                env().synapse_url,
                encode(&space_alias())
            ))
            .bearer_auth(config_with(&[]).registration.as_token.expose())
            .send()
            .await
            .unwrap();
        assert!(deleted.status().is_success(), "{deleted:?}");
    };

    // Someone joins by the alias: Synapse asks the bridge, which points it back.
    delete_alias().await;
    let bob = MatrixUser::register("bob").await;
    assert_eq!(bob.join(&space_alias()).await.expect("join #city"), space);

    // A backfill does the same.
    delete_alias().await;
    let summary = backfill().await;
    assert_eq!(summary["space"]["aliases_restored"], 1, "{summary}");
    assert_eq!(resolve(&bot, &space_alias()).await, space);
    let again = backfill().await;
    assert_eq!(again["space"]["aliases_restored"], 0, "{again}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_room_the_bridge_has_no_power_in_is_listed_without_its_parent() {
    let bridge = Bridge::start().await;
    // A city room whose Matrix room is a person's (as after an upgrade they made): the
    // bridge is not even in it.
    let alice = MatrixUser::register("alice").await;
    let room = alice.create_room(&unique("upgraded")).await;
    let slug = crate::support::city_room(bridge.pool(), "Upgraded").await;
    sqlx::query("UPDATE city_rooms SET matrix_room_id = $2 WHERE slug = $1")
        .bind(&slug)
        .bind(&room)
        .execute(bridge.pool())
        .await
        .unwrap();

    let summary = backfill().await;
    assert!(
        summary["space"]["parents_refused"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    let space = resolve(&alice, &space_alias()).await;
    assert!(
        children(&space).await.contains(&room),
        "listed all the same"
    );
    let state = alice
        .get(&format!(
            "/v3/rooms/{}/state/m.space.parent/{}",
            encode(&room),
            encode(&space)
        ))
        .await;
    assert!(state.is_err(), "no parent was set: {state:?}");
    bridge.stop().await;
}
