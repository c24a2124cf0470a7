"""Adapters to rule engines: durable_rules lives behind `durable_adapter`."""
