"""The /v1 routers: thin handlers over the domain services."""
