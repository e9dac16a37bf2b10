-- Events already applied. A consumer inserts (source, event_id) in the same transaction
-- as the event's effect, so a redelivered event changes nothing.
CREATE TABLE processed_events (
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
