"""Who may do what: transport security, identities, roles and per-identity limits."""
