"""Defaults a front end shows before it opens the store.

Kept apart from :mod:`pools.store.db` so that showing them (``promomail --help``)
does not import SQLAlchemy.
"""

DEFAULT_URL = "sqlite:///promomail.db"
