"""abguard: guards ML model A/B tests with versioned risk policies compiled to durable_rules."""

__version__ = "0.1.0"
