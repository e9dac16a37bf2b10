"""The exercise service's domain: the curated exercise and quiz banks and pure grading.

Plain typed Python: no grpc, no Kafka, no database. Running code is delegated to an
`Execute` callable that the service binds to the sandbox.
"""
