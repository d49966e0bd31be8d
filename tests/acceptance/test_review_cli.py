"""`review list|show|approve|reject`: the real CLI on a real database with messages pending review,
as `process-campaign-sends` leaves them for a campaign with `review: all`."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.base import utcnow
from db.models import GeneratedMessage
from tests import factories
from tests.acceptance.test_cli import run


@pytest.fixture
def pending(sessions) -> list[str]:
    """Three messages pending review in step 1 of one campaign, one in step 2; their ids."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, name="Q4 outreach")
        ids = []
        for i, step in enumerate([1, 1, 1, 2]):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            send = factories.scheduled_send(
                session,
                camp,
                lead,
                step=step,
                subject=f"Idea {i}",
                body=f"Hi,\n\nBody of message {i}.\n\nAlex",
                statusReason="awaiting review: every message is reviewed (review: all)",
            )
            send.scheduledFor = None
            message = session.get(GeneratedMessage, send.generatedMessageId)
            message.status = "pending_review"
            message.reviewReason = "every message is reviewed (review: all)"
            message.createdAt = utcnow() - timedelta(hours=4 - i)  # oldest first
            ids.append(message.id)
        return ids


def statuses(sessions) -> dict[str, tuple[str, str | None, bool]]:
    with sessions() as session:
        return {
            m.id: (m.status, m.reviewNote, m.reviewedAt is not None)
            for m in session.scalars(select(GeneratedMessage))
        }


def test_list_and_show_what_waits_and_why(database_url, pending):
    listed = run(database_url, "review", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 4
    assert all("every message is reviewed (review: all)" in line for line in lines)
    assert pending[0] in lines[0] and "lead0@buyer.example" in lines[0] and "'Idea 0'" in lines[0]
    assert "Q4 outreach" in lines[0] and "step 1" in lines[0] and "step 2" in lines[3]
    assert "waiting 4.0 h" in lines[0] and "waiting 2.0 h" in lines[2]

    elsewhere = run(database_url, "review", "list", "--campaign", "nope")
    assert elsewhere.stdout.strip() == "nothing pending review in campaign nope"

    shown = run(database_url, "review", "show", pending[1])
    assert shown.returncode == 0, shown.stderr
    assert f"message {pending[1]}: pending_review" in shown.stdout
    assert "to Sarah <lead1@buyer.example>" in shown.stdout
    assert "why it needs review: every message is reviewed (review: all)" in shown.stdout
    assert "send: scheduled (awaiting review:" in shown.stdout
    assert "Subject: Idea 1" in shown.stdout and "Body of message 1." in shown.stdout

    missing = run(database_url, "review", "show", "nope")
    assert missing.returncode == 1 and "no message with id 'nope'" in missing.stderr


def test_approve_and_reject_change_only_what_they_may(database_url, sessions, pending):
    approved = run(database_url, "review", "approve", pending[0])
    assert approved.returncode == 0, approved.stderr
    assert f"approved {pending[0]}" in approved.stdout
    assert "checks them with the quality gate" in approved.stdout

    rejected = run(database_url, "review", "reject", pending[1], "--why", "  Too long  ")
    assert rejected.returncode == 0, rejected.stderr
    assert f"rejected {pending[1]}" in rejected.stdout
    after = statuses(sessions)
    assert after[pending[0]] == ("approved", None, True)
    assert after[pending[1]] == ("rejected", "Too long", True)

    # An approved message is not approved again, an unknown id is said to be unknown, and the
    # ids that may be approved still are: a rejection can be reconsidered.
    mixed = run(database_url, "review", "approve", pending[0], "nope", pending[1])
    assert mixed.returncode == 1
    assert f"{pending[0]}: is approved; only a message pending_review or rejected" in mixed.stdout
    assert "nope: no such message" in mixed.stdout
    assert f"approved {pending[1]}" in mixed.stdout
    assert "2 of 3 message(s) left as they were" in mixed.stderr
    assert statuses(sessions)[pending[1]] == ("approved", None, True)

    # Only a pending message can be rejected, and never without a reason.
    again = run(database_url, "review", "reject", pending[0], "--why", "changed my mind")
    assert again.returncode == 1 and statuses(sessions)[pending[0]][0] == "approved"
    blank = run(database_url, "review", "reject", pending[2], "--why", " ")
    assert blank.returncode == 1 and "--why needs a reason" in blank.stderr
    assert statuses(sessions)[pending[2]] == ("pending_review", None, False)


def test_approve_all_in_step_approves_that_steps_pending_messages_only(
    database_url, sessions, pending
):
    run(database_url, "review", "reject", pending[0], "--why", "no")
    whole_step = run(database_url, "review", "approve", "--all-in-step", pending[1])
    assert whole_step.returncode == 0, whole_step.stderr
    assert whole_step.stdout.count("approved ") == 2
    after = statuses(sessions)
    assert [after[i][0] for i in pending] == ["rejected", "approved", "approved", "pending_review"]

    two = run(database_url, "review", "approve", "--all-in-step", pending[1], pending[3])
    assert two.returncode == 1 and "exactly one message id" in two.stderr
    empty = run(database_url, "review", "approve", "--all-in-step", pending[1])
    assert empty.returncode == 1 and "nothing pending review in the step" in empty.stderr
