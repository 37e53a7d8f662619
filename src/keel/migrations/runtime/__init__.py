"""Running the revisions: Alembic driven from code, and the safe runner around it.

``schema.py`` is the plain upgrade/downgrade and the schema's current revision;
``runner.py`` applies and rolls back with a lock (``locking.py``), checksums, a
backup (``backup.py``, ``restore.py``), one transaction per revision
(``session.py``) and a history table (``history.py``, ``auditing.py``);
``plan.py``, ``dryrun.py`` and ``status.py`` answer what would run.
"""
