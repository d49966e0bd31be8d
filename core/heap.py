"""The heap of a process that runs latency-bound work: settled before the work begins."""

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_startup_heap() -> None:
    """Once per process: collect, then move every object alive now (the imported modules of
    Prefect, SQLAlchemy, pydantic, openai and ours) out of the collector's reach.

    A full collection walks every tracked object while holding the GIL. In a flow process that
    took 140-210 ms, five times in a 3,000-lead run, and every LLM call in flight waited it out
    (their slots held 460-550 ms per 300 ms call around each). With the start frozen, a full
    collection walks only what the run made: 20-55 ms. What is frozen is never freed, which is
    why it happens once per process, after a collection, and not at every run.
    """
    global _frozen
    with _lock:
        if _frozen:
            return
        gc.collect()
        gc.freeze()
        _frozen = True
