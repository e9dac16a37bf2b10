"""The debug service (learnflow.debug.v1): diagnoses errors and leads the student to the fix with a hint ladder."""
