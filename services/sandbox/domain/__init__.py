"""Sandbox domain: run limits and the friendly pre-checks done on the host (no grpc here)."""
