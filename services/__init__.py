"""LearnFlow services: the shared runtime kit and one package per gRPC service."""
