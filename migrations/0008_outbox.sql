-- The transactional outbox: events for the rest of the platform, written in the same
-- Postgres transaction as the change they describe, before Synapse's 200, and published
-- to JetStream by the relay. Positions come from the sequence of `messages.seq`, so the
-- relay merges new messages (`messaging.message.created`, read from `messages` itself:
-- no second row per message) and these rows into one order.
CREATE TABLE outbox (
    pos        BIGINT PRIMARY KEY
               DEFAULT nextval(pg_get_serial_sequence('messages', 'seq')::regclass),
    -- The subject: messaging.message.updated|deleted, messaging.reaction.updated,
    -- messaging.channel.created, messaging.member.invited, city.room.created|archived.
    subject    TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    -- The message (messaging.message.*, messaging.reaction.updated); its payload is read
    -- when it is published.
    event_id   TEXT,
    -- The reaction key (messaging.reaction.updated).
    key        TEXT,
    -- The payload, when it is fixed when written.
    payload    JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set once JetStream acknowledged it; sent rows are deleted after OUTBOX_RETENTION_HOURS.
    sent_at    TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (pos) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- The last message (`messages.seq`) the relay published. Messages indexed before the
-- outbox existed are not announced again.
CREATE TABLE relay_progress (
    id    BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    seq   BIGINT NOT NULL,
    -- Names this database in `Nats-Msg-Id`s (`<epoch>:<position>`), so that a database
    -- started afresh never has its events taken for duplicates of an older one's.
    epoch TEXT NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text)
);
INSERT INTO relay_progress (seq) SELECT COALESCE(max(seq), 0) FROM messages;
