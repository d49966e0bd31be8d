"""The bounce corpus (tests/fixtures/bounces, described by its manifest.csv) through
`classify_message`, and how many of its bounces each reader recognises on its own.

`python -m tests.unit.test_bounce_corpus` prints the figures; the README quotes them.
"""

import csv
import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from flufl.bounce import all_failures

from core.engagement.bounces import BounceReading, read_prose, read_with_flufl
from core.engagement.events import NormalisedEvent
from core.engagement.inbound import classify_message
from core.statuses import EngagementType

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
ROWS = list(csv.DictReader((CORPUS / "manifest.csv").open(encoding="utf-8")))


def _raw(row: dict[str, str]) -> bytes:
    return (CORPUS / row["file"]).read_bytes()


def _message(row: dict[str, str]) -> EmailMessage:
    return email.message_from_bytes(_raw(row), policy=email.policy.default)


def test_the_manifest_lists_every_file_once() -> None:
    listed = [row["file"] for row in ROWS]
    assert sorted(listed) == sorted(path.name for path in CORPUS.glob("*.eml"))
    assert len(set(listed)) == len(listed) >= 20
    assert {row["kind"] for row in ROWS} == {"hard", "soft"}
    assert all(row["modelled_on"] for row in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_every_corpus_bounce_is_read(row: dict[str, str]) -> None:
    found = classify_message(_raw(row), source="corpus", line=1)
    assert isinstance(found, NormalisedEvent), found
    assert found.type == EngagementType.bounce
    assert found.email == row["recipient"]
    assert found.bounce_kind is not None and found.bounce_kind.value == row["kind"]
    assert found.message_id == (row["message_id"] or None)
    assert found.event_metadata()["bounceReader"] in ("rfc3464", "flufl.bounce", "prose")
    # A diagnostic is the bounce's own words, never our returned email's.
    assert "BODY-MARKER" not in found.model_dump_json()


@pytest.mark.parametrize(
    ("name", "reader"),
    [
        ("postfix-dsn-hard.eml", "rfc3464"),  # well-formed: the first reader keeps it
        ("dsn-status-part-as-text-plain.eml", "flufl.bounce"),
        ("qmail-soft.eml", "flufl.bounce"),
        ("exchange-prose-hard.eml", "prose"),  # flufl.bounce knows no Exchange 2010 text
        ("german-exchange-hard.eml", "prose"),
        ("french-mailbox-full-soft.eml", "prose"),
    ],
)
def test_the_event_says_which_reader_read_it(name: str, reader: str) -> None:
    found = classify_message((CORPUS / name).read_bytes(), source="corpus", line=1)
    assert isinstance(found, NormalisedEvent)
    assert found.bounce_reader == reader
    assert found.event_metadata()["bounceReader"] == reader


# -- the evaluation --------------------------------------------------------------------------


@dataclass
class Figures:
    """Of the corpus: bounces a reader recognised, and of those the recipient and kind right."""

    recognised: int = 0
    recipient: int = 0
    kind: int = 0

    def add(self, row: dict[str, str], recipient: str | None, kind: str | None) -> None:
        if recipient is None and kind is None:
            return
        self.recognised += 1
        self.recipient += recipient == row["recipient"]
        self.kind += kind == row["kind"]


def _flufl_alone(message: EmailMessage) -> tuple[str | None, str | None]:
    """flufl.bounce as it comes: one address, hard when permanent and soft when temporary."""
    temporary, permanent = all_failures(message)
    found = sorted(address.decode().lower() for address in temporary | permanent)
    if not found:
        return None, None
    return (found[0] if len(found) == 1 else None), ("hard" if permanent else "soft")


def _reading(found: BounceReading | None) -> tuple[str | None, str | None]:
    return (found.recipient, found.kind.value) if found else (None, None)


def _rfc3464_alone(row: dict[str, str]) -> tuple[str | None, str | None]:
    found = classify_message(_raw(row), source="corpus", line=1)
    if isinstance(found, NormalisedEvent) and found.bounce_reader == "rfc3464":
        return found.email, found.bounce_kind.value if found.bounce_kind else None
    return None, None


def _the_chain(row: dict[str, str]) -> tuple[str | None, str | None]:
    found = classify_message(_raw(row), source="corpus", line=1)
    if isinstance(found, NormalisedEvent) and found.type == EngagementType.bounce:
        return found.email, found.bounce_kind.value if found.bounce_kind else None
    return None, None


def evaluate() -> dict[str, Figures]:
    readers: dict[str, Callable[[dict[str, str]], tuple[str | None, str | None]]] = {
        "RFC 3464 reader alone": _rfc3464_alone,
        "flufl.bounce 6.0.0 alone": lambda row: _flufl_alone(_message(row)),
        "flufl.bounce, kind from the notice": lambda row: _reading(read_with_flufl(_message(row))),
        "prose reader alone": lambda row: _reading(read_prose(_message(row))),
        "classify_message (all three)": _the_chain,
    }
    figures = {name: Figures() for name in readers}
    for row in ROWS:
        for name, read in readers.items():
            figures[name].add(row, *read(row))
    return figures


def report(figures: dict[str, Figures]) -> str:
    lines = [f"{len(ROWS)} bounces: recognised, recipient right, hard/soft right"]
    lines += [
        f"{name:36} {found.recognised:3} {found.recipient:3} {found.kind:3}"
        for name, found in figures.items()
    ]
    return "\n".join(lines)


def test_the_evaluation_figures() -> None:
    figures = evaluate()
    print("\n" + report(figures))
    # The figures the README quotes; a change to a reader that moves them updates both.
    assert {name: (f.recognised, f.recipient, f.kind) for name, f in figures.items()} == {
        "RFC 3464 reader alone": (3, 3, 3),
        "flufl.bounce 6.0.0 alone": (23, 23, 15),
        "flufl.bounce, kind from the notice": (23, 23, 23),
        "prose reader alone": (29, 29, 29),
        "classify_message (all three)": (29, 29, 29),
    }


if __name__ == "__main__":
    print(report(evaluate()))
