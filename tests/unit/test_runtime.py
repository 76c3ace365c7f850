"""The garbage collector's settings for a long-running server process."""

from __future__ import annotations

import gc

from service.server.runtime import GEN0_THRESHOLD, settle_after_startup


def test_the_collector_is_settled_after_startup():
    threshold = gc.get_threshold()
    try:
        settle_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
