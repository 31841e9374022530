-- City rooms: the DAARION side of every Matrix room the bridge owns.
CREATE TABLE city_rooms (
    -- DAARION id, `room_city_<slug>`; other services refer to rooms by it.
    id                TEXT PRIMARY KEY,
    -- URL name and the `<slug>` of the Matrix alias `#city_<slug>:<server>`.
    slug              TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    -- Human name without the "DAARION City — " prefix the Matrix room name carries.
    name              TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- Shown as the Matrix room topic.
    description       TEXT,
    -- The room the UI opens first.
    is_default        BOOLEAN NOT NULL DEFAULT false,
    -- public: `public_chat` preset and listed in the room directory; private: invite only.
    visibility        TEXT NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    -- Set when the room is archived: alias queries no longer create it.
    archived_at       TIMESTAMPTZ,
    -- NULL until the Matrix room exists (created lazily on the first alias query).
    matrix_room_id    TEXT,
    matrix_room_alias TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One Matrix room is one city room, and the other way round.
CREATE UNIQUE INDEX city_rooms_matrix_room_id_uq
    ON city_rooms (matrix_room_id) WHERE matrix_room_id IS NOT NULL;
CREATE UNIQUE INDEX city_rooms_matrix_room_alias_uq
    ON city_rooms (matrix_room_alias) WHERE matrix_room_alias IS NOT NULL;

-- The rooms every city starts with; their Matrix rooms appear on the first join by alias.
INSERT INTO city_rooms (id, slug, name, description, is_default) VALUES
    ('room_city_general', 'general', 'General', 'Головна кімната міста', true),
    ('room_city_welcome', 'welcome', 'Welcome', 'Start here: meet the city and its agents', false);

-- Last applied state event per (room, type): the same event pushed again changes nothing.
CREATE TABLE matrix_room_state (
    matrix_room_id   TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    PRIMARY KEY (matrix_room_id, event_type)
);
