"""The debug service (learnflow.debug.v1): diagnoses errors and leads to the fix."""
