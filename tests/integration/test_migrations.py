"""Migrations: the seed's names on real PostgreSQL, up and down, and the SQL files' equivalence."""

from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text

import db.models  # noqa: F401  (registers the tables on Base.metadata)
from core.replies.actions import ReplyAction
from core.replies.intent import ClassificationMethod, Intent
from core.statuses import (
    CampaignLeadStatus,
    CampaignStatus,
    EmailSendStatus,
    EngagementType,
    GeneratedMessageStatus,
    MailboxStatus,
)
from db.base import Base
from db.engine import alembic_config, head_revision, upgrade
from tests.schema_snapshot import schema_snapshot

SQL_DIR = Path(__file__).resolve().parents[2] / "db" / "sql"

# The seed document's tables and columns, exactly as the web app names them.
SEED_COLUMNS = {
    "Campaign": {
        "id",
        "workspaceId",
        "name",
        "status",
        "sendingRules",
        "startAt",
        "createdAt",
        "updatedAt",
        "goal",
    },
    "SequenceStep": {
        "id",
        "campaignId",
        "stepOrder",
        "delayDays",
        "subjectTemplate",
        "bodyTemplate",
        "createdAt",
        "aiInstructions",
    },
    "CampaignLead": {
        "id",
        "campaignId",
        "leadId",
        "status",
        "stopReason",
        "createdAt",
        "updatedAt",
        "currentStepOrder",
        "nextScheduledDate",
    },
    "GeneratedMessage": {"id", "campaignId", "leadId", "stepId", "subject", "body", "status"},
    "EmailSend": {
        "id",
        "campaignId",
        "leadId",
        "stepId",
        "generatedMessageId",
        "toEmail",
        "status",
        "scheduledFor",
        "sentAt",
        "providerMessageId",
    },
    "EngagementEvent": {"id", "emailSendId", "type", "occurredAt"},
    "Lead": {
        "id",
        "workspaceId",
        "email",
        "firstName",
        "lastName",
        "companyName",
        "title",
        "industry",
        "companySize",
        "website",
        "timezone",
        "customFields",
        "createdAt",
        "updatedAt",
    },
    "Workspace": {"id", "name"},
    "Suppression": {"id", "workspaceId", "email", "reason", "createdAt"},
}


def _revisions_after_baseline() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(""))
    return [rev.revision for rev in reversed(list(script.walk_revisions())) if rev.down_revision]


def _run_sql_file(url: str, name: str) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute((SQL_DIR / f"{name}.sql").read_text())


def _snapshot(url: str) -> dict[str, set[tuple]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return schema_snapshot(conn)
    finally:
        engine.dispose()


def test_head_has_every_seed_table_and_column(database_url):
    engine = create_engine(database_url)
    inspector = inspect(engine)
    for table, columns in SEED_COLUMNS.items():
        assert columns <= {c["name"] for c in inspector.get_columns(table)}, table
    with engine.connect() as conn:
        timestamp_types = {
            row[2] for row in schema_snapshot(conn)["columns"] if "timestamp" in row[2]
        }
    assert timestamp_types == {"timestamp(3) without time zone"}
    assert "CampaignLead_nextScheduledDate_idx" in {
        i["name"] for i in inspector.get_indexes("CampaignLead")
    }
    sending_rules = next(
        c for c in inspector.get_columns("Campaign") if c["name"] == "sendingRules"
    )
    assert str(sending_rules["type"]) == "JSONB"
    engine.dispose()


def test_models_match_migrations(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_status_checks_allow_exactly_the_core_values(database_url):
    engine = create_engine(database_url)
    expected = {
        "Campaign_status_check": CampaignStatus,
        "CampaignLead_status_check": CampaignLeadStatus,
        "GeneratedMessage_status_check": GeneratedMessageStatus,
        "EmailSend_status_check": EmailSendStatus,
        "EngagementEvent_type_check": EngagementType,
        "Mailbox_status_check": MailboxStatus,
        "ReplyClassification_intent_check": Intent,
        "ReplyClassification_method_check": ClassificationMethod,
        "ReplyClassification_action_check": ReplyAction,
    }
    with engine.connect() as conn:
        for name, values in expected.items():
            definition = conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :n"),
                {"n": name},
            ).scalar_one()
            for value in values:
                assert f"'{value.value}'" in definition, (name, value)
            assert definition.count("::text") == len(values), name
    engine.dispose()


def test_upgrade_downgrade_upgrade_round_trips(empty_database_url):
    upgrade(empty_database_url)
    at_head = _snapshot(empty_database_url)
    config = alembic_config(empty_database_url)
    from alembic import command

    command.downgrade(config, "base")
    assert _snapshot(empty_database_url)["columns"] == set()
    upgrade(empty_database_url, "baseline")
    baseline = _snapshot(empty_database_url)
    assert not any(col[1] == "goal" for col in baseline["columns"])
    upgrade(empty_database_url)
    assert _snapshot(empty_database_url) == at_head


def test_seed_sql_file_on_baseline_equals_alembic_revision(empty_database_url, server_url):
    from tests.conftest import create_database, drop_database

    upgrade(empty_database_url, "add_ai_campaign_fields")
    expected = _snapshot(empty_database_url)
    other = create_database(server_url, make_url(empty_database_url).database + "_sql")
    try:
        upgrade(other, "baseline")
        _run_sql_file(other, "add_ai_campaign_fields")
        assert _snapshot(other) == expected
        _run_sql_file(other, "add_ai_campaign_fields")  # pasted twice: still the same schema
        assert _snapshot(other) == expected
    finally:
        drop_database(server_url, make_url(other).database)


def test_baseline_plus_every_sql_file_equals_head(empty_database_url, server_url):
    from tests.conftest import create_database, drop_database

    upgrade(empty_database_url)
    expected = _snapshot(empty_database_url)
    other = create_database(server_url, make_url(empty_database_url).database + "_sql")
    try:
        upgrade(other, "baseline")
        revisions = _revisions_after_baseline()
        assert revisions[0] == "add_ai_campaign_fields" and revisions[-1] == head_revision()
        for revision in revisions:
            _run_sql_file(other, revision)
        assert _snapshot(other) == expected
    finally:
        drop_database(server_url, make_url(other).database)


@pytest.mark.parametrize("revision", ["baseline", "add_ai_campaign_fields"])
def test_existing_rows_survive_the_upgrade(empty_database_url, revision):
    upgrade(empty_database_url, revision)
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('w', 'W', now());
               INSERT INTO "Campaign" (id, "workspaceId", name, status, "updatedAt")
                   VALUES ('c', 'w', 'C', 'active', now());
               INSERT INTO "Lead" (id, "workspaceId", email, "updatedAt")
                   VALUES ('l', 'w', 'a@b.example', now());
               INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status, "updatedAt")
                   VALUES ('cl', 'c', 'l', 'active', now());"""
            )
        )
    upgrade(empty_database_url)
    with engine.connect() as conn:
        row = conn.execute(
            text('SELECT status, "currentStepOrder", "nextScheduledDate" FROM "CampaignLead"')
        ).one()
    assert tuple(row) == ("active", None, None)
    engine.dispose()
