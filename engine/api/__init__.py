"""Generated gRPC code lives under engine.api.v1 (make proto)."""
