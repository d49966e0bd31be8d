"""Enrolment follows the seed: active, step 1, due now or at startAt; twice is a no-op."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from db.models import CampaignLead, Lead
from db.queries.enrolment import enrol_lead_rows, upsert_leads
from tests import factories

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _row(email: str, **fields):
    return {"email": email, "customFields": fields.pop("customFields", {}), **fields}


def test_enrolment_follows_the_seed_and_twice_is_a_no_op(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        rows = [_row("a@x.io", firstName="A"), _row("b@x.io")]
        first = enrol_lead_rows(session, camp, rows, NOW)
        again = enrol_lead_rows(session, camp, rows, NOW + timedelta(hours=1))
    assert (first.enrolled, first.already_enrolled) == (2, 0)
    assert (again.enrolled, again.already_enrolled) == (0, 2)
    with sessions() as session:
        enrolments = session.scalars(select(CampaignLead)).all()
    assert {(e.status, e.currentStepOrder, e.nextScheduledDate) for e in enrolments} == {
        ("active", 1, NOW)
    }


def test_a_later_start_at_sets_the_first_send(sessions):
    start = NOW + timedelta(days=7)
    with sessions.begin() as session:
        camp = factories.campaign(session, factories.workspace(session), startAt=start)
        enrol_lead_rows(session, camp, [_row("a@x.io")], NOW)
    with sessions() as session:
        assert session.scalars(select(CampaignLead.nextScheduledDate)).one() == start


def test_upsert_keeps_known_values_and_merges_custom_fields(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        upsert_leads(
            session,
            ws.id,
            [
                _row(
                    "Ann@X.io", firstName="Ann", title="CEO", customFields={"plan": "pro", "a": "1"}
                )
            ],
        )
        ids = upsert_leads(
            session,
            ws.id,
            [
                _row("ann@x.io", firstName=None, title="CTO", customFields={"plan": "team"}),
                _row("ANN@x.io", companyName="X"),  # same address twice in one batch: first wins
            ],
        )
    assert list(ids) == ["ann@x.io"]
    with sessions() as session:
        lead = session.scalars(select(Lead)).one()
    assert lead.email == "Ann@X.io"  # the first spelling stays; matching ignores case
    assert (lead.firstName, lead.title, lead.companyName) == ("Ann", "CTO", None)
    assert lead.customFields == {"plan": "team", "a": "1"}
