-- The presence the platform set for an agent, kept until it sets another: refreshed in
-- Synapse before Synapse times the agent out, and re-applied after a restart.
ALTER TABLE agents
    ADD COLUMN presence TEXT CHECK (presence IN ('online', 'unavailable', 'offline')),
    ADD COLUMN status_msg TEXT,
    ADD COLUMN presence_set_at TIMESTAMPTZ;
