"""Finding and opening the shipped checkpoint imports neither torch nor transformers: the worker
does it on its way to starting the engine process, and those imports take seconds."""

from __future__ import annotations

import subprocess
import sys

from workers.backends.stream import resolve_guard_checkpoint

PROBE = """
import sys
from workers.backends.stream import resolve_guard_checkpoint
checkpoint = resolve_guard_checkpoint("default", allow_test_checkpoint=False)
assert checkpoint.config.labels.response.categories, checkpoint
heavy = sorted(name for name in ("torch", "transformers", "sentence_transformers") if name in sys.modules)
print(",".join(heavy))
"""


def test_opening_the_shipped_checkpoint_imports_no_torch() -> None:
    resolve_guard_checkpoint("default", allow_test_checkpoint=False)  # materialised once (that needs torch)
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert probe.stdout.strip() == "", f"imported: {probe.stdout.strip()}"
