"""Write-ahead requests: stable ids, the API's limits, and reading output and error files."""

import json
from datetime import UTC, datetime, timedelta

from core.generation.pregenerate import (
    BatchRequest,
    custom_id,
    read_result_lines,
    split_requests,
    upcoming_window,
)


def request(n: int, size: int = 10) -> BatchRequest:
    return BatchRequest(f"pg-{n}", f"cl-{n}", "step", "hash", b"x" * (size - 1) + b"\n")


def test_custom_id_is_stable_per_lead_step_and_input_and_fits_the_api():
    first = custom_id("cl-1", "step-1", "a" * 64)
    assert first == custom_id("cl-1", "step-1", "a" * 64)
    others = {custom_id("cl-2", "step-1", "a" * 64), custom_id("cl-1", "step-1", "b" * 64)}
    assert first not in others and len(others) == 2
    assert len(first) <= 64


def test_batches_are_split_at_the_request_and_byte_limits():
    requests = [request(n) for n in range(7)]
    sizes = [len(chunk) for chunk in split_requests(requests, max_requests=3, max_bytes=10_000)]
    assert sizes == [3, 3, 1]
    sizes = [len(chunk) for chunk in split_requests(requests, max_requests=100, max_bytes=25)]
    assert sizes == [2, 2, 2, 1]  # 20 bytes fit, a third line would make 30
    # A single line over the byte limit still goes, alone (the API then refuses that one batch).
    assert [len(c) for c in split_requests([request(0, 50)], max_bytes=25)] == [1]
    assert list(split_requests([])) == []


def test_output_and_error_lines_become_answers_and_malformed_lines_are_counted():
    body = {"id": "chatcmpl-1", "object": "chat.completion"}
    lines = [
        json.dumps({"custom_id": "a", "response": {"status_code": 200, "body": body}}),
        json.dumps({"custom_id": "b", "response": None, "error": {"code": "batch_expired"}}),
        json.dumps({"custom_id": "c", "response": {"status_code": 500, "body": {"error": {}}}}),
        '{"custom_id": ',
        "",
    ]
    answers, unreadable = read_result_lines("\n".join(lines))
    assert unreadable == 1
    assert [(a.customId, a.body, a.error) for a in answers] == [
        ("a", body, None),
        ("b", None, "batch request failed: batch_expired"),
        ("c", None, "batch request failed: HTTP 500"),
    ]


def test_the_window_runs_from_the_minimum_lead_to_the_maximum_days():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert upcoming_window(now, min_lead_hours=36, max_days=7) == (
        now + timedelta(hours=36),
        now + timedelta(days=7),
    )
