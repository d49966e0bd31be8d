"""Children of the generation benchmark that measure parts, not the flow: the bare openai client
against the fake server (the ceiling), and each component's CPU per lead in isolation."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from prefect.results import get_result_store
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.utilities.annotations import quote
from prefect.utilities.collections import visit_collection
from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_to_final_result

from benchmarks import dependencies as deps
from benchmarks.generation_flow import apply_variant
from benchmarks.generation_setup import AS_OF, DUMMY_KEY, MODEL
from benchmarks.harness.machine import proc_cpu
from benchmarks.harness.servers import fake_openai
from core.generation.gate import check_draft, normalize_draft
from core.generation.generate import Prepared, generate_for_lead, plan_writes, prepare
from core.generation.llm import RESPONSE_FORMAT, OpenAIGenerator
from core.settings import Settings
from db.engine import DatabaseConfig, make_engine, make_session_factory
from db.queries.claims import preview_due_leads

# The pipeline's own format object, typed as the SDK declares it (core keeps a plain dict).
BARE_RESPONSE_FORMAT = cast(ResponseFormatJSONSchema, RESPONSE_FORMAT)


def sdk_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    """build_messages' dicts as the SDK types them (it writes only system and user messages)."""
    typed: list[ChatCompletionMessageParam] = []
    for message in messages:
        assert message.keys() == {"role", "content"}, sorted(message)
        if message["role"] == "system":
            typed.append({"role": "system", "content": message["content"]})
        else:
            assert message["role"] == "user", message["role"]
            typed.append({"role": "user", "content": message["content"]})
    return typed


async def _bare(
    base_url: str,
    messages: list[list[ChatCompletionMessageParam]],
    requests: int,
    concurrency: int,
) -> tuple[float, int]:
    client = AsyncOpenAI(api_key=DUMMY_KEY, base_url=base_url, timeout=30.0, max_retries=4)
    counter = itertools.count()
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while (i := next(counter)) < requests:
            try:
                await client.chat.completions.create(
                    model=MODEL,
                    messages=messages[i % len(messages)],
                    response_format=BARE_RESPONSE_FORMAT,
                )
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, failures


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """AsyncOpenAI.chat.completions.create with the pipeline's messages and response format."""
    messages = json.loads(Path(spec["messages_file"]).read_text())
    requests, concurrency = spec["requests"], spec["concurrency"]
    with fake_openai(spec["latency_ms"]) as fake:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        fake0 = proc_cpu(fake.child_pid)
        elapsed, failures = asyncio.run(_bare(fake.base_url, messages, requests, concurrency))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        fake1 = proc_cpu(fake.child_pid)
        served = fake.stats().requests
    cpu = usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime
    return {
        "kind": "bare",
        "requests": requests,
        "served": served,
        "failures": failures,
        "latency_ms": spec["latency_ms"],
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests_per_s": (requests - failures) / elapsed,
        "client_cpu_ms_per_request": 1000 * cpu / requests,
        "server_cpu_ms_per_request": (
            1000 * (fake1 - fake0) / requests if fake0 is not None and fake1 is not None else None
        ),
        "prompt_chars": statistics.mean(sum(len(m["content"]) for m in ms) for ms in messages),
    }


# --------------------------------------------------------------------------------------------
# Child: per-lead CPU cost of each component, in isolation


def _cpu_ms_per(count: int, fn: Any, repeat: int = 3) -> float:
    """Best-of-`repeat` CPU milliseconds of fn() divided by count."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return round(1000 * best / count, 3)


def _wall_and_cpu(coro_factory: Any) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(coro_factory())
    return time.perf_counter() - started, time.process_time() - cpu


def child_micro(spec: dict[str, Any]) -> dict[str, Any]:
    """What one lead costs in the flow process, component by component (CPU ms per lead).

    Uses one batch (--batch-size leads previewed from the seeded database): prepare(), the
    quality gate, Prefect's traversal of the two big tasks' parameters (as the task engine does
    it, with and without prefect.utilities.annotations.quote), the per-lead ResultStore cache
    (a miss, then a write), plan_writes, and the openai call through OpenAIGenerator and through
    a bare AsyncOpenAI create() against the fake server.
    """
    os.environ.update(DATABASE_URL=spec["database_url"], OPENAI_API_KEY=DUMMY_KEY)
    engine = make_engine(spec["database_url"])
    with make_session_factory(engine)() as session:
        leads = preview_due_leads(session, as_of=AS_OF, now=AS_OF, limit=spec["batch"])
    engine.dispose()
    count = len(leads)
    out: dict[str, Any] = {"batch": count}

    out["prepare"] = _cpu_ms_per(count, lambda: [prepare(lead, model=MODEL) for lead in leads])
    prepared = [
        p for p in (prepare(lead, model=MODEL) for lead in leads) if isinstance(p, Prepared)
    ]
    apply_variant("no-llm-http")
    generator = deps.GENERATION_CLIENT.original()()

    async def generate_all() -> list[Any]:
        return list(
            await asyncio.gather(
                *(generate_for_lead(p, generator, deps.NoCache(), model=MODEL) for p in prepared)
            )
        )

    outcomes = asyncio.run(generate_all())
    drafts = [(o.generation.draft, p) for o, p in zip(outcomes, prepared, strict=True)]
    out["quality_gate"] = _cpu_ms_per(
        count,
        lambda: [
            check_draft(normalize_draft(d), rendered=p.rendered, rules=p.rules) for d, p in drafts
        ],
    )
    out["plan_writes"] = _cpu_ms_per(
        count, lambda: plan_writes(leads, outcomes, as_of=AS_OF, max_attempts=8)
    )

    # Prefect: what the task engine does with each call's parameters, twice per call.
    config = deps.GenerationConfig.from_settings(Settings())
    database = DatabaseConfig.from_settings(Settings())
    calls = {
        "generate_messages": {"leads": leads, "config": config},
        "write_messages": {
            "database": database,
            "config": config,
            "claim": deps.Claim(token="t", leads=leads),
            "outcomes": outcomes,
            "as_of": AS_OF,
        },
    }

    def traverse(parameters: dict[str, Any]) -> None:
        for value in parameters.values():
            collect_task_run_inputs_sync(value)
        for name, value in parameters.items():
            visit_collection(
                value,
                visit_fn=resolve_to_final_result,
                return_data=True,
                max_depth=-1,
                remove_annotations=True,
                context={"parameter_name": name},
            )

    for name, parameters in calls.items():
        quoted = {
            k: quote(v) if isinstance(v, list | deps.Claim) else v for k, v in parameters.items()
        }
        out[f"prefect_params_{name}"] = _cpu_ms_per(count, lambda p=parameters: traverse(p))
        out[f"prefect_params_{name}_quoted"] = _cpu_ms_per(count, lambda p=quoted: traverse(p))

    # The per-lead cache: a miss (aexists) then a write, 64 at a time, as generate_for_lead does.
    results_dir = tempfile.mkdtemp(prefix="cp-bench-micro-")
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results_dir}):
        cache = deps.ResultStoreCache(get_result_store())

        async def store_all(tag: str) -> None:
            slots = asyncio.Semaphore(spec["concurrency"])

            async def one(i: int, outcome: Any) -> None:
                async with slots:
                    key = f"{tag}-{outcome.input_hash}"
                    await cache.get(key)
                    await cache.put(key, outcome.generation)

            await asyncio.gather(*(one(i, o) for i, o in enumerate(outcomes)))

        runs = [_wall_and_cpu(lambda t=f"r{i}": store_all(t)) for i in range(3)]
        wall, cpu = min(runs, key=lambda r: r[1])
        out["result_store_get_miss_put"] = round(1000 * cpu / count, 3)
        out["result_store_wall_ms_per_lead_c64"] = round(1000 * wall / count, 3)

    # The openai call: the pipeline's generator against a bare create(), same messages.
    requests = spec["requests"]
    messages = [p.messages() for p in prepared]
    bare_messages = [sdk_messages(m) for m in messages]
    with fake_openai(0) as fake:

        async def via_generator() -> None:
            real = OpenAIGenerator(api_key=DUMMY_KEY, base_url=fake.base_url, timeout=30)
            limit = asyncio.Semaphore(spec["concurrency"])

            async def one(i: int) -> None:
                async with limit:
                    await real.generate(messages[i % len(messages)], model=MODEL)

            await asyncio.gather(*(one(i) for i in range(requests)))
            await real.aclose()

        asyncio.run(_bare(fake.base_url, bare_messages, 500, spec["concurrency"]))  # warm-up
        bare_wall, bare_cpu = _wall_and_cpu(
            lambda: _bare(fake.base_url, bare_messages, requests, spec["concurrency"])
        )
        gen_wall, gen_cpu = _wall_and_cpu(via_generator)
    out["openai_bare_create"] = round(1000 * bare_cpu / requests, 3)
    out["openai_bare_create_req_per_s"] = round(requests / bare_wall)
    out["openai_via_OpenAIGenerator"] = round(1000 * gen_cpu / requests, 3)
    out["openai_via_OpenAIGenerator_req_per_s"] = round(requests / gen_wall)
    return {"kind": "micro", "cpu_ms_per_lead": out}
