"""The concepts agent (learnflow.concepts.v1)."""
