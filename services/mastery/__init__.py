"""The mastery service (learnflow.mastery.v1): the mastery engine."""
