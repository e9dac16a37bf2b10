"""The triage service (learnflow.triage.v1): classifies a student's request, adds their context and routes it to an agent."""
