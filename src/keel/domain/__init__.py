"""The product: organisations, users, tokens, recognitions, evidence, exports.

Plain async services over a SQLAlchemy session. They know nothing of HTTP:
they take a :class:`Principal` and raise :mod:`keel.errors`.
"""
