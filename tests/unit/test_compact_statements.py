"""Statements run once a send stay within psycopg's cache of converted statements."""

import pytest
from psycopg import _queries
from sqlalchemy.dialects import postgresql

from db.queries.delivery import HAND_OVER_GROUP
from db.queries.rows import compact


def test_the_handover_statement_fits_psycopgs_statement_cache():
    # Past this length psycopg converts the placeholders again at every execution.
    sent = str(HAND_OVER_GROUP.compile(dialect=postgresql.psycopg.dialect()))
    assert len(sent) <= _queries.MAX_CACHED_STATEMENT_LENGTH


def test_compact_makes_each_run_of_whitespace_one_space():
    assert compact("SELECT a,\n       b\n  FROM t\n") == "SELECT a, b FROM t"


def test_compact_refuses_a_comment_that_would_swallow_the_statement():
    with pytest.raises(ValueError, match="comment"):
        compact("SELECT 1 -- one\nFROM t")
