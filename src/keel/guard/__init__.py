"""Guards on the request path: rate limits, quotas and idempotency keys."""
