-- Journal positions are taken as one past the last one committed, by the append itself,
-- instead of from a sequence. A sequence value is spent even when the insert fails (a
-- statement timeout, a deadlock, a full disk, a request dropped mid-insert) and a crash of
-- Postgres skips the values it had cached: gaps that the indexer could not tell from a
-- row still committing. Taken from the table, a failed append leaves no gap, and a row
-- committed late makes the next append wait for it (the primary key) and then take the
-- position after it. So once the indexer holds position P, every row before P that will
-- ever exist is committed, and a position missing below P is one no row took.
ALTER TABLE ingest_journal ALTER COLUMN pos DROP IDENTITY;
