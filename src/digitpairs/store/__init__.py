"""The results store: one SQLite file that owns every table (store/schema.py: versioned, with numbered
migrations): studies and their specs, runs and curves, kept weights, per-pair answers, and the leases of processes
sharing a study's work. No torch."""

from digitpairs.store.store import RUN_COLUMNS, Store, files

__all__ = ["RUN_COLUMNS", "Store", "files"]
