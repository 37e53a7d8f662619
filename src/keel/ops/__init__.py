"""Operator tools run from the CLI: migrations, deploys, SLOs, parity, synthetic checks."""
