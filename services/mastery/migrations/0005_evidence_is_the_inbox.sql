-- depends: 0004_outbox_event_id
-- The evidence table is the inbox: an event is applied once because its evidence row
-- (student, source, id) is claimed in the same transaction as its effect. A separate
-- processed_events row per event cost a second heap row and index entry for the same
-- fact (ADR 0005). Every event ever claimed there has its evidence row.
DROP TABLE processed_events;
