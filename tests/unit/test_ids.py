"""Text primary keys."""

import time

from core.ids import new_id, ordered_id_prefix


def test_ordered_prefixes_ascend_with_time_and_make_ids_like_new_ids():
    earlier = ordered_id_prefix()
    time.sleep(0.001)
    later = ordered_id_prefix()
    assert earlier < later and len(earlier) == 26
    assert len(later + "00002a") == len(new_id()) == 32
    assert len({ordered_id_prefix() for _ in range(1000)}) == 1000
