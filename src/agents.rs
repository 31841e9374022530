//! Agents: the platform's AI agents as Matrix virtual users `@agent_<name>:<server>`.

use ruma::{ServerName, UserId};
use tracing::info;

use crate::{Result, matrix::Homeserver, store::Store};

/// The agent id `agent:<name>` of a user in the agent namespace on `server`.
pub fn agent_id_of(user: &UserId, server: &ServerName) -> Option<String> {
    if user.server_name() != server {
        return None;
    }
    let name = user.localpart().strip_prefix("agent_")?;
    (!name.is_empty()).then(|| format!("agent:{name}"))
}

/// Registers the Matrix user of a known agent and sets its display name. Returns false,
/// touching nothing, when `user` is not the user of an agent in `agents`.
pub async fn provision(
    store: &Store,
    homeserver: &Homeserver,
    server: &ServerName,
    user: &UserId,
) -> Result<bool> {
    let Some(agent_id) = agent_id_of(user, server) else {
        return Ok(false);
    };
    let Some(agent) = store.agent(&agent_id).await? else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        let server = ServerName::parse("example.org").unwrap();
        let id = |u: &str| agent_id_of(&UserId::parse(u).unwrap(), &server);
        assert_eq!(
            id("@agent_sofia:example.org").as_deref(),
            Some("agent:sofia")
        );
        assert_eq!(id("@agent_:example.org"), None);
        assert_eq!(id("@sofia:example.org"), None);
        assert_eq!(id("@agent_sofia:other.org"), None);
    }
}
