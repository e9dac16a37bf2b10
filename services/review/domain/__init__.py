"""The review domain: linter findings, complexity metrics, the quality score and
suggestions, as plain typed values (no grpc, no database, no model client)."""
