"""The Prefect task of `sendingRules.abTest.autoSelect`: judge each running A/B test, record its
winner once there is one, so every later lead of the step gets it."""

from prefect import get_run_logger
from sqlalchemy.orm import Session

from core.analytics.variant_report import step_auto_selection
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.variants import record_winner, step_tests
from tasks.database import database_task, in_transaction


@database_task("select-variant-winners")
async def select_variant_winners(database: DatabaseConfig, *, campaign_id: str | None) -> int:
    """Record the winner of each autoSelect test that has one now; returns how many."""

    def select(session: Session) -> list[tuple[str, str]]:
        now = utcnow()
        chosen = []
        for test in step_tests(session, campaign_id=campaign_id):
            pick = step_auto_selection(test.rules, test.tallies)
            if pick is None:
                continue
            figures = pick.figures()
            if record_winner(
                session, step_id=test.step_id, key=pick.winner, figures=figures, now=now
            ):
                chosen.append((test.step_id, pick.sentence))
        return chosen

    chosen = await in_transaction(database, select)
    logger = get_run_logger()
    for step_id, sentence in chosen:
        logger.info("A/B test of step %s decided: %s", step_id, sentence)
    return len(chosen)
