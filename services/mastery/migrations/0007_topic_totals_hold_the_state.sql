-- depends: 0006_evidence_recorded_at
-- topic_totals holds each (student, topic)'s whole state, and topic 0 the student's
-- overall: the exercises' best-score sum and count (kept by deltas as exercise_best
-- changes), and the active days as a bitmask (bit i: `i` days before days_last; see
-- services/mastery/domain/model.py). A batch reads one row per topic it touches instead
-- of aggregating exercise_best and scanning active_days for every student (ADR 0005).
ALTER TABLE topic_totals
    ADD COLUMN exercise_sum   double precision NOT NULL DEFAULT 0,
    ADD COLUMN exercise_count integer          NOT NULL DEFAULT 0,
    ADD COLUMN days_last      date,
    ADD COLUMN days           bigint           NOT NULL DEFAULT 0;

-- The state of what is already stored, built the way ingestion keeps it.
INSERT INTO topic_totals AS t (student_id, topic, exercise_sum, exercise_count)
SELECT student_id, topic, sum(best), count(*) FROM exercise_best GROUP BY 1, 2
ON CONFLICT (student_id, topic) DO UPDATE
    SET exercise_sum = EXCLUDED.exercise_sum, exercise_count = EXCLUDED.exercise_count;

INSERT INTO topic_totals AS t
    (student_id, topic, quiz_sum, quiz_count, quality_sum, quality_count,
     exercise_sum, exercise_count)
SELECT student_id, 0, sum(quiz_sum), sum(quiz_count), sum(quality_sum), sum(quality_count),
       sum(exercise_sum), sum(exercise_count)
FROM topic_totals WHERE topic > 0 GROUP BY 1
ON CONFLICT (student_id, topic) DO NOTHING;

WITH days AS (
    SELECT student_id, topic, day FROM active_days
    UNION SELECT student_id, 0, day FROM active_days
), last AS (
    SELECT student_id, topic, max(day) AS days_last FROM days GROUP BY 1, 2
), state AS (
    SELECT d.student_id, d.topic, l.days_last,
           bit_or(1::bigint << (l.days_last - d.day)) AS days
    FROM days d JOIN last l USING (student_id, topic)
    WHERE l.days_last - d.day < 62
    GROUP BY 1, 2, 3
)
INSERT INTO topic_totals AS t (student_id, topic, days_last, days)
SELECT student_id, topic, days_last, days FROM state
ON CONFLICT (student_id, topic) DO UPDATE
    SET days_last = EXCLUDED.days_last, days = EXCLUDED.days;
