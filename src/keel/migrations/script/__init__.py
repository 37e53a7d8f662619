"""The revisions as data: Alembic's script location and the ordered graph over it.

This folder *is* Alembic's script location: ``env.py`` (hands Alembic the
connection ``runtime/schema.py`` opened), ``script.py.mako`` and
``versions/``, one file per revision. ``graph.py`` reads them in order with
each file's checksum and declared kind; ``templates.py`` writes new ones.
"""
