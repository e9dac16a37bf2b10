-- The review service's state: one row per code review. The row keeps the API message
-- as protobuf bytes (what Get and List return) plus the columns queries need.

CREATE TABLE code_reviews (
    student_id    text        NOT NULL,
    review_id     text        NOT NULL,
    -- The class the review counts towards (the student's token's first cohort):
    -- teachers read the reviews of their cohorts.
    cohort        text        NOT NULL DEFAULT '',
    exercise_id   text,
    quality_score integer     NOT NULL CHECK (quality_score BETWEEN 0 AND 100),
    create_time   timestamptz NOT NULL,
    message       bytea       NOT NULL,
    PRIMARY KEY (student_id, review_id)
);
-- ListCodeReviews: a student's reviews, newest first.
CREATE INDEX code_reviews_recent ON code_reviews (student_id, create_time DESC, review_id DESC);
