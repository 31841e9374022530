-- Outbox events the bus refused for good (larger than the server's or the stream's limit,
-- whatever the bridge did to bound them): recorded here and skipped, so that everything
-- after them flows.
CREATE TABLE outbox_dead_letters (
    -- The event's position (messages.seq or outbox.pos).
    pos         BIGINT PRIMARY KEY,
    subject     TEXT NOT NULL,
    channel_id  TEXT,
    event_id    TEXT,
    reason      TEXT NOT NULL,
    -- The payload's size in bytes.
    size        BIGINT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A dead letter keeps the sender too, when it could be read.
ALTER TABLE dead_letters ADD COLUMN sender TEXT;
