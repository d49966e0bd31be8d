"""The pool serves every delivery lane at once, each with its second connection."""

from contextlib import ExitStack

from db.engine import make_engine


def test_twenty_lanes_with_a_second_connection_each_never_wait_for_the_pool(database_url):
    engine = make_engine(database_url)
    engine.pool._timeout = 1  # a lane left waiting would raise instead of hanging the test
    try:
        with ExitStack() as held:
            connections = [held.enter_context(engine.connect()) for _ in range(2 * 20)]
            assert all(c.exec_driver_sql("SELECT 1").scalar() == 1 for c in connections)
    finally:
        engine.dispose()
