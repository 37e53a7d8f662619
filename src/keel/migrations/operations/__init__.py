"""Helpers revision files call, so every revision does a risky operation the same way."""
