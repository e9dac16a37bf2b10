"""The review service (learnflow.review.v1): linter findings, complexity, a score."""
