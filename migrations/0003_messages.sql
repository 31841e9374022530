-- The message index: who said what where and when. Full content stays in Matrix.
CREATE TABLE messages (
    -- The city room (channel) the message was posted in.
    channel_id       TEXT NOT NULL REFERENCES city_rooms (id) ON DELETE CASCADE,
    matrix_room_id   TEXT NOT NULL,
    -- The key and the unit of idempotency: a replayed event never adds a row. (No
    -- surrogate id: every extra index costs each of the 100 inserts of a transaction.)
    matrix_event_id  TEXT PRIMARY KEY,
    -- DAARION entity id: `user:<localpart>`, `agent:<name>`, or the Matrix id for remote users.
    sender_id        TEXT NOT NULL,
    sender_matrix_id TEXT NOT NULL,
    sender_type      TEXT NOT NULL CHECK (sender_type IN ('human', 'agent')),
    -- m.text | m.notice | m.emote
    msgtype          TEXT NOT NULL,
    -- The body, cut on a character boundary.
    content_preview  TEXT NOT NULL,
    -- origin_server_ts of the event.
    created_at       TIMESTAMPTZ NOT NULL,
    indexed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by an m.replace edit; the preview then shows the new content.
    edited_at        TIMESTAMPTZ,
    -- Set by m.room.redaction; the preview is emptied.
    redacted_at      TIMESTAMPTZ
);
CREATE INDEX messages_channel_time ON messages (channel_id, created_at DESC);

-- Events the bridge could not apply. They are skipped so Synapse's stream never stalls,
-- and kept here (with the reason) to be looked at and replayed by hand.
CREATE TABLE dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id      TEXT NOT NULL,
    event_id    TEXT,
    room_id     TEXT,
    event_type  TEXT,
    reason      TEXT NOT NULL,
    -- The event as received; TEXT, not JSONB, so that any bytes Synapse sent can be kept.
    event       TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- A replayed transaction records its bad events once. (Synapse transaction ids are not
-- unique over time, so they are no key: the event is.)
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (md5(event));
