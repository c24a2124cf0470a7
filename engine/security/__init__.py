"""Who may do what: TLS and mTLS, identities, roles and per-identity limits, for both transports."""
