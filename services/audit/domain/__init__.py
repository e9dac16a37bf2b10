"""The audit domain: stored records, ListAuditEvents filters and page positions, as
plain typed values (no grpc, no database, no broker)."""
