"""Generated from protos/engine/api/v1/risk.proto by `make proto`; not committed."""
