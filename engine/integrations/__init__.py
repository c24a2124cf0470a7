"""The real systems abguard talks to after a decision: feature-flag providers, Alertmanager."""
