-- depends: 0003_history_pending
-- The id a published event carries (ce_id). The row's serial id restarts with every
-- database (a benchmark's, a restored one), and consumers remember the ids they have
-- applied: an id made from it once made notify skip new mastery changes as old ones.
ALTER TABLE outbox ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid();
