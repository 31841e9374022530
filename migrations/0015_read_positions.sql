-- Read receipts and unread counts.

-- How far each local user has read each channel: the latest `m.read` receipt they sent,
-- through the API or from any Matrix client (Synapse pushes receipts as ephemeral data).
-- Unread counts are the channel's message rows after `seq`, read through the
-- messages_channel_seq index (channel_id, seq); a position only moves forward.
CREATE TABLE read_positions (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL REFERENCES city_rooms (id) ON DELETE CASCADE,
    -- The event the receipt names (a message, or any other event of the room).
    event_id   TEXT NOT NULL,
    -- The stream position read up to: the message's own, or, for an event that is no
    -- indexed message (a membership, a state event), the channel's last message then.
    seq        BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, room_id)
);

-- `m.mentions.user_ids` of a message (NULL when it names nobody): a mention of a user
-- counts in their mention_count, as does their display name or localpart in the text.
ALTER TABLE messages ADD COLUMN mentions TEXT[];
