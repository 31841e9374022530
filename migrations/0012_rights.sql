-- Who may do what through the messaging API.

-- The Matrix user who created a channel through the messaging API, kept for good (unlike
-- creator_user_id, cleared once the creator is settled): a user's channel quota counts
-- these.
ALTER TABLE city_rooms ADD COLUMN created_by TEXT;
CREATE INDEX city_rooms_created_by ON city_rooms (created_by) WHERE created_by IS NOT NULL;
