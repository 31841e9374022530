-- Who may do what through the messaging API.

-- The Matrix user who created a channel through the messaging API, kept for good (unlike
-- creator_user_id, cleared once the creator is settled): a user's channel quota counts
-- these.
ALTER TABLE city_rooms ADD COLUMN created_by TEXT;
CREATE INDEX city_rooms_created_by ON city_rooms (created_by) WHERE created_by IS NOT NULL;

-- An `Idempotency-Key` is reserved before its send: a row without event_id is a send under
-- way (another request with the key answers 409 meanwhile; one reserved more than a minute
-- ago is taken over by a retry, which sends with the same transaction id, so Synapse
-- answers with the first event if there was one). channel_id: the channel it was for
-- (NULL in rows from before; those are matched by their event).
ALTER TABLE send_requests
    ALTER COLUMN event_id DROP NOT NULL,
    ADD COLUMN channel_id TEXT,
    ADD COLUMN reserved_at TIMESTAMPTZ NOT NULL DEFAULT now();
