//! Agent users: registered on demand when Synapse asks about them.

use serde_json::Value;

use crate::support::{Bridge, MatrixUser, alias, city_room, encode, eventually, hs_token, unique};

async fn insert_agent(bridge: &Bridge, name: &str, display: &str) {
    sqlx::query("INSERT INTO agents (id, display_name) VALUES ($1, $2)")
        .bind(format!("agent:{name}"))
        .bind(display)
        .execute(bridge.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_known_agent_is_registered_when_invited_to_a_city_room() {
    let bridge = Bridge::start().await;
    let name = unique("sofia");
    insert_agent(&bridge, &name, "Sofia").await;
    let alice = MatrixUser::register("alice").await;
    let slug = city_room(bridge.pool(), "Agents").await;
    let room_id = alice.join(&alias(&slug)).await.unwrap();
    let server = &crate::support::env().server_name;
    let agent = format!("@agent_{name}:{server}");

    // Before pushing an invite of an unknown user in our namespace, Synapse asks the bridge
    // whether it exists; the bridge registers it. (Inviting takes power: the bridge invites.)
    let bridge_user = MatrixUser::appservice();
    bridge_user
        .invite(&room_id, &agent)
        .await
        .expect("invite the agent");
    let pool = bridge.pool().clone();
    let agent_id = format!("agent:{name}");
    let stored: String = eventually("agent registered", || {
        let (pool, agent_id) = (pool.clone(), agent_id.clone());
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT matrix_user_id FROM agents WHERE id = $1",
            )
            .bind(agent_id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(stored, agent);
    let profile = alice
        .get(&format!("/v3/profile/{}", encode(&agent)))
        .await
        .expect("agent profile");
    assert_eq!(profile["displayname"], "Sofia");

    // An agent the platform does not know is not registered.
    let stranger = format!("@agent_{}:{server}", unique("nobody"));
    bridge_user
        .invite(&room_id, &stranger)
        .await
        .expect("Synapse invites a user of the namespace it does not know");
    // Synapse asks the bridge about the user before it pushes the invite: once the invite
    // is in the index, the question was asked and answered.
    eventually("the stranger's invite indexed", || {
        let (pool, room_id, stranger) = (pool.clone(), room_id.clone(), stranger.clone());
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT membership FROM room_members WHERE matrix_room_id = $1 AND user_id = $2",
            )
            .bind(room_id)
            .bind(stranger)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .filter(|membership| membership == "invite")
        }
    })
    .await;
    let refused = alice
        .get(&format!("/v3/profile/{}", encode(&stranger)))
        .await
        .expect_err("unknown agent");
    assert_eq!(refused.status, 404);
    bridge.stop().await;
}

#[tokio::test]
async fn user_query_answers_both_ways() {
    let bridge = Bridge::start().await;
    let name = unique("max");
    insert_agent(&bridge, &name, "Max").await;
    let server = &crate::support::env().server_name;
    let query = |user: String| {
        let url = format!("{}/_matrix/app/v1/users/{}", bridge.url(), encode(&user));
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(hs_token())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(query(format!("@agent_{name}:{server}")).await.0, 200);
    let ghost = format!("@agent_{}:{server}", unique("ghost"));
    let (status, reply) = query(ghost.clone()).await;
    assert_eq!(
        (status, reply["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(
        query(format!("@{name}:{server}")).await.0,
        404,
        "not in the agent namespace"
    );
    assert_eq!(
        query(format!("@agent_{name}:elsewhere.org")).await.0,
        404,
        "another server"
    );
    // Nothing was registered in Synapse for the agent the platform does not know.
    let observer = crate::support::MatrixUser::register("observer").await;
    let refused = observer
        .get(&format!("/v3/profile/{}", encode(&ghost)))
        .await
        .expect_err("no such user");
    assert_eq!(refused.status, 404);
    // While the known agent's user exists.
    observer
        .get(&format!(
            "/v3/profile/{}",
            encode(&format!("@agent_{name}:{server}"))
        ))
        .await
        .expect("registered agent");
    bridge.stop().await;
}
