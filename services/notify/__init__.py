"""The notify service (learnflow.notify.v1): alerts for teachers and live update streams."""
