"""Reports for analysts, computed from the frames `db/queries/report.py` reads."""
