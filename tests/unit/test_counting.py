"""Tally: counters that fold by name, checked when the class is made and when a column is bumped."""

from typing import ClassVar

import pytest

from core.counting import Tally
from core.delivery.report import DeliveryColumn, DeliveryReport
from core.engagement.report import IngestColumn, IngestReport
from core.generation.regeneration_report import StepCounts


def test_add_sums_counters_and_keeps_labels():
    mine = StepCounts(campaign_id="c1", step=2, claimed=2, held=1)
    mine.add(StepCounts(campaign_id="c1", step=2, claimed=3, regenerated=3, llm_calls=4))
    assert (mine.step, mine.claimed, mine.regenerated, mine.held, mine.llm_calls) == (2, 5, 3, 1, 4)


def test_bump_refuses_a_name_that_is_not_a_counter():
    line = StepCounts(campaign_id="c1", step=2)
    with pytest.raises(KeyError, match="no counter 'step'"):
        line.bump("step")


def test_a_counter_that_is_not_an_int_field_fails_at_class_creation():
    with pytest.raises(TypeError, match="label"):

        class Broken(Tally):
            counters: ClassVar[tuple[str, ...]] = ("label",)
            label: str = ""


def test_delivery_report_folds_batches_by_column():
    run, batch = DeliveryReport(), DeliveryReport()
    run.count("c1", "a@x.test", DeliveryColumn.sent)
    batch.count("c1", "a@x.test", DeliveryColumn.sent)
    batch.count("c1", "a@x.test", DeliveryColumn.retried, "421 busy")
    run.merge(batch)
    assert run.total(DeliveryColumn.sent) == 2
    assert run.table()[0]["retried"] == 1
    assert run.table()[0]["why"] == "retried: 421 busy ×1"


def test_ingest_report_folds_chunks_by_column():
    run, chunk = IngestReport(), IngestReport()
    run.count("file", "open", IngestColumn.new, 3)
    chunk.count("file", "open", IngestColumn.duplicate, 2)
    chunk.count("file", "open", IngestColumn.new, 1)
    run.merge(chunk)
    assert (run.total(IngestColumn.new), run.total(IngestColumn.duplicate)) == (4, 2)
