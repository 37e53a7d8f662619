"""The operator console: ``/ops``, one page for the people who run Keel.

``state`` gathers what an operator looks at first, each part from the place that
owns it (readiness from the health registry, queues from the job store, breakers
from the breaker registry, breaches and noisy neighbours from their tables,
deployments from the deploy store); ``access`` checks the operator token; the page
itself (``assets/``) is static and polls ``/ops/state``, so the server never
renders data into HTML.

The console shows every tenant's data, so it answers to an operator token
(``KEEL_OPS_TOKEN_SHA256``), never to an organisation's admin token.
"""
