"""Fixtures every test tier shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

_PREFIX = "STREAMWARDEN_"

# Property tests draw the same examples on every run by default, so a run's result does not depend
# on luck; `HYPOTHESIS_PROFILE=explore` draws fresh examples on each run to hunt for new failures.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _restore_streamwarden_environment() -> Iterator[None]:
    """Undo any change a test makes to ``STREAMWARDEN_*`` variables, so settings never leak between tests."""
    before = {k: v for k, v in os.environ.items() if k.startswith(_PREFIX)}
    yield
    for key in [k for k in os.environ if k.startswith(_PREFIX) and k not in before]:
        del os.environ[key]
    os.environ.update(before)
