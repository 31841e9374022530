-- Search moves into `messages`. The bridge makes each message's search vector itself
-- (store/search.rs: the same words for messages and queries, Postgres's text parser run on
-- neither) and writes it in the statement that indexes the message. The index is applied
-- after Synapse's acknowledgement (from the ingest journal), so the GIN index is off that
-- path, and a message is searchable as soon as it is indexed: no second pass reading
-- new rows back, no second table with its key and foreign key, no mark of its own.
ALTER TABLE messages ADD COLUMN search TSVECTOR;

-- What was searchable stays searchable; what the old indexer had not reached yet is
-- made searchable now.
UPDATE messages m SET search = s.tsv FROM message_search s WHERE s.event_id = m.matrix_event_id;
UPDATE messages m
SET search = to_tsvector('simple', m.content_preview || ' ' ||
                                   translate(COALESCE(m.media->>'name', ''), '._-', '   '))
WHERE m.search IS NULL AND m.msgtype IS NOT NULL AND m.redacted_at IS NULL
  AND m.content_preview <> '' AND m.seq > (SELECT seq FROM search_progress);

DROP TABLE message_search;
DROP TABLE search_progress;

-- Only messages with words: redacted, encrypted and empty ones add no entry.
CREATE INDEX messages_search ON messages USING gin (search) WHERE search IS NOT NULL;
