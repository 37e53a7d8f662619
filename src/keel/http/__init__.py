"""The request pipeline: everything between the ASGI server and a route's handler.

Where a request goes, in the order it goes (:mod:`keel.http.pipeline` says it
in code): ``tracing``/``trace`` and ``metrics`` (observability), ``draining``,
``boundary`` (every exception answered), ``shed`` (load shedding),
``authentication``, ``json_body``, ``replay`` and ``idempotency``
(``Idempotency-Key``), ``limits`` (rate limits, quotas, in-flight slots),
``response_headers``, then the route. Each route declares its facts once
(``facts``); ``routing`` and ``routes`` are the table built from them;
``state`` is what one step hands the next; ``problems`` turns every error into
RFC 9457 problem+json; ``openapi`` finishes the document; ``recorded`` is the
hook a keyed route stores its outcome with.

The decisions behind the steps — limits, idempotency claims, shedding — live
in :mod:`keel.guard` and know nothing of HTTP; this package adapts them.
"""
