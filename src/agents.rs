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
