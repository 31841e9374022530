-- A redaction finds the dead letters of the event it redacts, to remove their content.
CREATE INDEX dead_letters_event ON dead_letters (event_id) WHERE event_id IS NOT NULL;
-- Retention (DEAD_LETTER_RETENTION_DAYS) deletes by age.
CREATE INDEX dead_letters_recorded_at ON dead_letters (recorded_at);
