//! `city-bridge check` against the real homeserver: everything right with the test
//! configuration; Synapse's default directory rules named, with the fix.

use crate::support::{
    Bridge, MatrixUser, alias, city_room, config_with, start_synapse, start_synapse_with,
    stop_synapse,
};

#[tokio::test]
async fn check_passes_here_and_names_the_directory_rules_of_a_stock_synapse() {
    let bridge = Bridge::start().await;
    let slug = city_room(bridge.pool(), "Directory").await;
    let alice = MatrixUser::register("alice").await;
    alice
        .join(&alias(&slug))
        .await
        .expect("the city room exists");
    let config = config_with(&[]);
    // The reconciler lists the new room in the city's Space a moment after its creation.
    crate::support::eventually("the Space lists the new room", || async {
        city_bridge::check::run(&config, Some(&bridge.state.store))
            .await
            .iter()
            .any(|f| f.check == "city space" && f.ok)
            .then_some(())
    })
    .await;

    let findings = city_bridge::check::run(&config, Some(&bridge.state.store)).await;
    let checks: Vec<&str> = findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            "homeserver",
            "appservice ping",
            "room directory",
            "city space",
            "presence",
            "puppet registration"
        ]
    );
    assert!(findings.iter().all(|f| f.ok), "{findings:#?}");
    assert!(
        findings[0].detail.contains("Synapse 1."),
        "{:?}",
        findings[0]
    );

    // Synapse with its default room_list_publication_rules.
    stop_synapse().await;
    start_synapse_with(&[("SYNAPSE_STOCK_DIRECTORY", "1")]).await;
    let findings = city_bridge::check::run(&config, Some(&bridge.state.store)).await;
    stop_synapse().await;
    start_synapse().await;
    let directory = findings
        .iter()
        .find(|f| f.check == "room directory")
        .expect("a directory finding");
    assert!(!directory.ok, "{findings:#?}");
    let fix = directory.fix.as_deref().unwrap();
    assert!(fix.contains("room_list_publication_rules"), "{fix}");
    assert!(fix.contains("#city_*"), "{fix}");
    assert!(
        findings
            .iter()
            .filter(|f| f.check != "room directory")
            .all(|f| f.ok),
        "only the directory is wrong: {findings:#?}"
    );

    // The puppet registration missing is named too.
    let without = config_with(&[("PUPPET_REGISTRATION", "")]);
    let findings = city_bridge::check::run(&without, None).await;
    let puppet = findings
        .iter()
        .find(|f| f.check == "puppet registration")
        .unwrap();
    assert!(
        !puppet.ok
            && puppet
                .fix
                .as_deref()
                .unwrap()
                .contains("PUPPET_REGISTRATION")
    );
    bridge.stop().await;
}

#[tokio::test]
async fn check_probes_the_directory_on_a_fresh_install_and_leaves_nothing_behind() {
    // A fresh install: a database of its own, with no city room at all.
    let bridge = Bridge::start().await;
    let admin = sqlx::PgPool::connect(&crate::support::env().database_url)
        .await
        .unwrap();
    let database = crate::support::unique("city_bridge_fresh_");
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = crate::support::env()
        .database_url
        .rsplit_once('/')
        .map(|(server, _)| format!("{server}/{database}"))
        .unwrap();
    let fresh = city_bridge::store::Store::connect(&url).await.unwrap();
    let config = config_with(&[("DATABASE_URL", &url)]);

    let probed = |findings: Vec<city_bridge::check::Finding>| {
        findings
            .into_iter()
            .find(|f| f.check == "room directory")
            .expect("a directory finding")
    };
    let directory = probed(city_bridge::check::run(&config, Some(&fresh)).await);
    assert!(directory.ok, "{directory:#?}");
    // The probe's alias is gone again, and nothing of it is listed.
    let alias = directory
        .detail
        .split_whitespace()
        .find(|w| w.starts_with("#city_check-"))
        .expect("the probe names its alias")
        .trim_end_matches(',');
    let anyone = MatrixUser::register("carol").await;
    assert!(
        anyone
            .get(&format!(
                "/v3/directory/room/{}",
                crate::support::encode(alias)
            ))
            .await
            .is_err(),
        "{alias} still resolves"
    );
    let listed = anyone.get("/v3/publicRooms?limit=500").await.unwrap();
    assert!(
        !listed.to_string().contains("city_check-"),
        "a probe room is still listed"
    );

    // A stock Synapse refuses it, and the finding says what to change.
    stop_synapse().await;
    start_synapse_with(&[("SYNAPSE_STOCK_DIRECTORY", "1")]).await;
    let directory = probed(city_bridge::check::run(&config, Some(&fresh)).await);
    stop_synapse().await;
    start_synapse().await;
    assert!(!directory.ok, "{directory:#?}");
    assert!(
        directory
            .fix
            .as_deref()
            .unwrap()
            .contains("room_list_publication_rules")
    );
    fresh.pool().close().await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    bridge.stop().await;
}
