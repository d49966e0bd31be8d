"""The fake OpenAI server's Files and Batch API: uploads, batches and their output files.

A batch is answered the moment it is created, by the same responder as the completions
endpoint, and then shows the status `BatchFaults.status` names: `completed` (the default),
`in_progress` (until `finish()`), `expired`, `failed` or `cancelled`. An expired batch keeps the
answers finished before it expired (`BatchFaults.expire_after`) and reports the rest in its
error file as `batch_expired`, as the real API does. Per-request errors (`error_every`) and a
malformed output line (`malformed_every`) are the other faults. Every `custom_id` ever submitted
is counted, so a test can prove none was submitted twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BatchStatus = str
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})


@dataclass(frozen=True)
class BatchFaults:
    """What the next batches do; see the module docstring."""

    status: BatchStatus = "completed"
    error_every: int = 0  # every Nth request of a batch fails on its own (0: none)
    malformed_every: int = 0  # every Nth output line is not JSON (0: none)
    expire_after: int = 0  # an expired batch finished this many requests first


class FakeFiles:
    """Uploaded files, the batches made from them, and the counters tests read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = BatchFaults()
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self.submitted: Counter[str] = Counter()
        self.uploads = 0

    def reset(self) -> None:
        """Forget every file, batch and count."""
        with self._lock:
            self._files.clear()
            self._batches.clear()
            self.submitted.clear()
            self.uploads = 0
            self.faults = BatchFaults()

    def upload(self, content_type: bytes, raw: bytes) -> dict[str, Any]:
        """`POST /v1/files` (multipart: `purpose` and `file`): the file object."""
        parts = _form(content_type, raw)
        data = parts.get("file", b"")
        with self._lock:
            self.uploads += 1
            file_id = f"file-fake{len(self._files) + 1:06d}"
            obj = _file_object(file_id, data, parts.get("purpose", b"").decode() or "batch")
            self._files[file_id] = (obj, data)
        return obj

    def content(self, file_id: str) -> bytes | None:
        """`GET /v1/files/{id}/content`: the bytes, or None for an unknown file."""
        with self._lock:
            found = self._files.get(file_id)
        return found[1] if found else None

    def create(
        self, body: dict[str, Any], answer: Callable[[dict[str, Any], int], dict[str, Any] | str]
    ) -> dict[str, Any] | None:
        """`POST /v1/batches`: answers every request line at once; None for an unknown file.

        `answer(request, n)` is the completion object (or a fault name) for request body `n`.
        """
        data = self.content(str(body.get("input_file_id")))
        if data is None:
            return None
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        faults = self.faults
        outputs: list[str] = []
        errors: list[str] = []
        for number, line in enumerate(lines, start=1):
            custom_id = line["custom_id"]
            expired = faults.status == "expired" and number > faults.expire_after
            if expired or faults.status in {"failed", "cancelled"}:
                code = "batch_expired" if expired else f"batch_{faults.status}"
                errors.append(_error_line(number, custom_id, code))
                continue
            if faults.error_every and number % faults.error_every == 0:
                errors.append(_error_line(number, custom_id, "server_error"))
                continue
            if faults.malformed_every and number % faults.malformed_every == 0:
                outputs.append('{"id": "batch_req_broken", "custom_id": ')
                continue
            completion = answer(line["body"], number)
            outputs.append(json.dumps(_output_line(number, custom_id, completion)))
        with self._lock:
            self.submitted.update(line["custom_id"] for line in lines)
            batch_id = f"batch_fake{len(self._batches) + 1:06d}"
            batch = _batch_object(batch_id, body, len(lines), len(outputs), len(errors))
            batch["_outputs"], batch["_errors"] = outputs, errors
            self._batches[batch_id] = batch
            self._settle(batch, faults.status)
        return _public(batch)

    def _settle(self, batch: dict[str, Any], status: BatchStatus) -> None:
        batch["status"] = status
        if status in TERMINAL:
            now = int(time.time())
            batch[f"{status}_at"] = now
            for kind, key in (("_outputs", "output_file_id"), ("_errors", "error_file_id")):
                if batch[kind]:
                    file_id = f"file-fake{len(self._files) + 1:06d}"
                    data = ("\n".join(batch[kind]) + "\n").encode()
                    self._files[file_id] = (_file_object(file_id, data, "batch_output"), data)
                    batch[key] = file_id

    def finish(self) -> None:
        """Complete every batch still `in_progress`."""
        with self._lock:
            for batch in self._batches.values():
                if batch["status"] == "in_progress":
                    self._settle(batch, "completed")

    def retrieve(self, batch_id: str) -> dict[str, Any] | None:
        """`GET /v1/batches/{id}`."""
        with self._lock:
            batch = self._batches.get(batch_id)
            return _public(batch) if batch else None

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """`POST /v1/batches/{id}/cancel`: an open batch is cancelled, its answers kept."""
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            if batch["status"] not in TERMINAL:
                self._settle(batch, "cancelled")
            return _public(batch)

    def listing(self, after: str | None, limit: int) -> dict[str, Any]:
        """`GET /v1/batches`: newest first, paged by `after`."""
        with self._lock:
            batches = [_public(b) for b in reversed(self._batches.values())]
        if after is not None:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(batches) > limit,
        }


def _form(content_type: bytes, raw: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type + b"\r\n\r\n" + raw
    )
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = payload
    return parts


def _file_object(file_id: str, data: bytes, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": f"{file_id}.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _batch_object(
    batch_id: str, body: dict[str, Any], total: int, completed: int, failed: int
) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": body.get("endpoint"),
        "input_file_id": body.get("input_file_id"),
        "completion_window": body.get("completion_window"),
        "status": "validating",
        "created_at": int(time.time()),
        "metadata": body.get("metadata"),
        "output_file_id": None,
        "error_file_id": None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
    }


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}


def _output_line(number: int, custom_id: str, completion: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{number:06d}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{number}", "body": completion},
        "error": None,
    }


def _error_line(number: int, custom_id: str, code: str) -> str:
    error = {"code": code, "message": f"{code} (fake server)"}
    return json.dumps(
        {"id": f"batch_req_{number:06d}", "custom_id": custom_id, "response": None, "error": error}
    )
