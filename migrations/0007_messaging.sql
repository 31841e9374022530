-- Messaging: channels are city rooms; the message index gains its stream order, replies,
-- threads, reactions, confidential rooms and full-text search.

-- A channel of a microDAO is not one of the city's public rooms.
ALTER TABLE city_rooms
    ADD COLUMN microdao_id TEXT,
    -- The Matrix room is end-to-end encrypted: the bridge holds no keys, so it indexes
    -- metadata only.
    ADD COLUMN encrypted BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX city_rooms_microdao ON city_rooms (microdao_id) WHERE microdao_id IS NOT NULL;

-- The order the bridge indexed messages in (the order Synapse pushed them), never the
-- senders' clocks: history pages and their cursors follow it. Existing rows are numbered
-- in their physical order.
ALTER TABLE messages
    ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY,
    -- `m.in_reply_to` of a reply.
    ADD COLUMN reply_to TEXT,
    -- The root of the thread (`rel_type: m.thread`) the message is in.
    ADD COLUMN thread_root TEXT,
    -- NULL for a message of an encrypted room: metadata only.
    ALTER COLUMN msgtype DROP NOT NULL;
CREATE UNIQUE INDEX messages_channel_seq ON messages (channel_id, seq);
DROP INDEX messages_channel_time;
-- Search over previews: `simple` (no stemming: Postgres has no Ukrainian dictionary) with
-- prefix matching of each query word. Kept apart from `messages` and filled right after
-- ingestion by a background indexer, so that the GIN index is never on the path of
-- Synapse's acknowledgement.
CREATE TABLE message_search (
    event_id TEXT PRIMARY KEY REFERENCES messages (matrix_event_id) ON DELETE CASCADE,
    tsv      TSVECTOR NOT NULL
);
CREATE INDEX message_search_tsv ON message_search USING gin (tsv);
-- How far the indexer got (a stream position).
CREATE TABLE search_progress (
    id  BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    seq BIGINT NOT NULL
);
INSERT INTO search_progress (seq) VALUES (0);

-- `m.reaction` annotations of indexed messages; a redacted reaction is deleted.
CREATE TABLE reactions (
    -- The reaction event: one row per event, so a replay adds nothing.
    event_id         TEXT PRIMARY KEY,
    channel_id       TEXT NOT NULL REFERENCES city_rooms (id) ON DELETE CASCADE,
    matrix_room_id   TEXT NOT NULL,
    target_event_id  TEXT NOT NULL,
    key              TEXT NOT NULL,
    sender_matrix_id TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX reactions_target ON reactions (target_event_id, key);

-- `Idempotency-Key` of API sends: a retried request answers the first result.
CREATE TABLE send_requests (
    user_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX send_requests_created_at ON send_requests (created_at);
