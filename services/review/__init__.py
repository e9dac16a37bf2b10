"""The review service (learnflow.review.v1): reviews code: linter findings, complexity, a quality score."""
