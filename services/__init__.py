"""LearnFlow services: the shared runtime kit and one package per gRPC service."""

import os

# grpc's fork handlers, run in a forked child while other threads are inside grpc, can
# crash that child (seen as sandbox starts failing with status -6/-11 under load). Our
# forked children never use grpc: they exec bubblewrap, Envoy or Python at once. So turn
# the handlers off before anything imports grpc (a caller can still set it explicitly).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
