-- The ingest journal: each pushed transaction with timeline events, as received, is one
-- row appended and committed before Synapse's 200 (one insert, one WAL flush). The
-- indexer applies the rows in `pos` order, in batches, and advances `ingest_progress` in
-- the same Postgres transaction as the index writes, so a crash between the two replays
-- the rows after the mark (idempotent per event) and loses nothing.
CREATE TABLE ingest_journal (
    pos         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id      TEXT NOT NULL,
    -- The request body. lz4 compresses JSON several-fold at memory speed, and MAIN keeps
    -- the compressed body in the row when it fits a page: no TOAST chunks to write.
    body        BYTEA COMPRESSION lz4 NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE ingest_journal ALTER COLUMN body SET STORAGE MAIN;
-- The indexer is handed each row in memory; the table is read at start-up (the rows
-- after the mark) and trimmed behind the mark.

CREATE TABLE ingest_progress (
    id  BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    -- The last journal position applied to the index.
    pos BIGINT NOT NULL
);
INSERT INTO ingest_progress (pos) VALUES (0);

-- The index is written by the indexer alone, for rooms of the directory, and city rooms
-- are archived, never deleted: the foreign key's check on every inserted message (a
-- locking read of `city_rooms`, measured at 12 µs a row of the 28) buys nothing.
ALTER TABLE messages DROP CONSTRAINT messages_channel_id_fkey;

-- The relay and the search indexer read new messages in stream order across channels:
-- with an index on the position alone they read the next rows and stop, instead of
-- gathering every row past their mark and sorting (quadratic while they catch up).
-- Positions only grow, so its inserts are at the rightmost page.
CREATE INDEX messages_seq ON messages (seq);
