//! Agents: the platform's AI agents as Matrix virtual users `@agent_<name>:<server>`.

use ruma::{ServerName, UserId};
use tracing::info;

use crate::{Result, domain::AgentId, matrix::Homeserver, store::Store};

/// Registers the Matrix user of a known agent and sets its display name. Returns false,
/// touching nothing, when `user` is not the user of an agent in `agents`.
pub async fn provision(
    store: &Store,
    homeserver: &Homeserver,
    server: &ServerName,
    user: &UserId,
) -> Result<bool> {
    let Some(agent_id) = AgentId::of_user(user, server) else {
        return Ok(false);
    };
    let Some(agent) = store.agent(agent_id.as_str()).await? else {
        return Ok(false);
    };
    homeserver.register_user(user.localpart()).await?;
    if let Some(name) = agent.display_name.as_deref().filter(|n| !n.is_empty()) {
        homeserver.set_display_name(user, name).await?;
    }
    store
        .mark_agent_registered(&agent.id, user.as_str())
        .await?;
    info!(%user, agent = %agent.id, "registered agent user");
    Ok(true)
}

/// Keeps every agent in the presence the platform set for it: Synapse times out users that
/// do not sync (about 30 s), so the presence is set again every `every`, and at once on
/// start (after a restart), through `homeserver`, as `store` has it, and tells `live`.
/// Runs until the bridge shuts down.
pub async fn keep_presence(
    store: crate::store::Store,
    homeserver: crate::matrix::Homeserver,
    server_name: ruma::OwnedServerName,
    live: std::sync::Arc<crate::presence::LivePresence>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let agents = match store.agents_present().await {
            Ok(agents) => agents,
            Err(error) => {
                tracing::warn!(%error, "cannot read agent presence");
                continue;
            }
        };
        for (id, presence, status_msg) in agents {
            let (Ok(agent), Some(status)) = (
                AgentId::parse(id),
                crate::presence::PresenceStatus::parse(&presence),
            ) else {
                continue;
            };
            let user = agent.user_id(&server_name);
            if let Err(error) = homeserver
                .set_presence(&user, status.into(), status_msg)
                .await
            {
                tracing::warn!(%user, %error, "cannot refresh an agent's presence");
                continue;
            }
            live.set_presence(&user, status);
        }
    }
}

/// The agents service: registers the Matrix users of the agents the platform knows, and
/// joins an agent invited to a city room (in the background; an agent the platform does
/// not know is left invited).
#[derive(Debug, Clone)]
pub struct Agents {
    store: crate::store::Store,
    homeserver: crate::matrix::Homeserver,
    server_name: ruma::OwnedServerName,
    workers: crate::workers::Workers,
}

impl Agents {
    /// Agents registered and joined through `homeserver`, as `store` knows them, with
    /// invitations accepted as background tasks of `workers`.
    pub fn new(
        store: crate::store::Store,
        homeserver: crate::matrix::Homeserver,
        server_name: ruma::OwnedServerName,
        workers: crate::workers::Workers,
    ) -> Self {
        Self {
            store,
            homeserver,
            server_name,
            workers,
        }
    }

    /// Registers the Matrix user of a known agent (see [`provision`]).
    pub async fn provision(&self, user: &UserId) -> Result<bool> {
        provision(&self.store, &self.homeserver, &self.server_name, user).await
    }

    /// Follows the index: every agent invited to a mapped room accepts, until the indexer
    /// is gone.
    pub async fn follow(self, mut commits: crate::ingest::Subscription) {
        while let Some(committed) = commits.recv().await {
            for (room_id, agent) in &committed.invited_agents {
                self.accept(room_id.clone(), agent.clone());
            }
        }
    }

    /// `agent`, invited to the mapped room `room_id`, accepts on its own.
    fn accept(&self, room_id: ruma::OwnedRoomId, agent: ruma::OwnedUserId) {
        let this = self.clone();
        self.workers.spawn("agent joins", async move {
            let known = provision(&this.store, &this.homeserver, &this.server_name, &agent).await;
            match known {
                Ok(true) => {}
                Ok(false) => {
                    info!(%agent, %room_id, "invited agent unknown to the platform; left invited");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%agent, %room_id, %error, "cannot provision an invited agent");
                    return;
                }
            }
            match this.homeserver.join(&room_id, &agent).await {
                Ok(()) => info!(%agent, %room_id, "agent accepted an invite"),
                Err(error) => tracing::warn!(%agent, %room_id, %error, "agent cannot join"),
            }
        });
    }
}
