"""The sandbox service (learnflow.sandbox.v1): runs untrusted Python under strict limits."""
