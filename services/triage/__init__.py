"""The triage service (learnflow.triage.v1): classifies, adds context, routes."""
