"""The audit service (learnflow.audit.v1): stores the audit trail every server records
and lets a tenant's admins list it."""
