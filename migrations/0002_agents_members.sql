-- AI agents of the platform; each is the Matrix virtual user `@agent_<name>:<server>`.
CREATE TABLE agents (
    -- `agent:<name>`; `<name>` is the Matrix localpart after `agent_`.
    id             TEXT PRIMARY KEY CHECK (id ~ '^agent:[a-z0-9._=/+-]+$'),
    display_name   TEXT,
    -- Set once the Matrix user is registered, so it is registered only once.
    matrix_user_id TEXT UNIQUE,
    registered_at  TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Membership of mapped Matrix rooms, as the latest m.room.member event says.
CREATE TABLE room_members (
    matrix_room_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    -- The city room (`city_rooms.id`) the Matrix room maps to.
    room_id        TEXT NOT NULL REFERENCES city_rooms (id) ON DELETE CASCADE,
    -- join | leave | invite | ban | knock
    membership     TEXT NOT NULL,
    display_name   TEXT,
    -- The event that set this row, and its origin_server_ts.
    event_id       TEXT NOT NULL,
    event_ts       BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (matrix_room_id, user_id)
);
CREATE INDEX room_members_room_joined ON room_members (room_id) WHERE membership = 'join';
