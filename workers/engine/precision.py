"""Whether this machine computes in bfloat16 natively, which decides what ``auto`` precision means.

On CUDA, and on CPUs with bfloat16 instructions (AVX512_BF16, AMX-BF16: recent Xeons, AMD Zen 4
and later), bfloat16 matrix products run 2-3x faster than float32 ones. CPUs without them emulate
bfloat16 in float32 with conversions around it, which is slower than float32 itself (6x for the
prefilter's encoder on such a machine, ``docs/benchmarks.md``). ``engine.dtype: auto`` and
``guard.prefilter_dtype: auto`` read this, so one default is fast on both kinds of CPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags of the instructions that compute bfloat16 products natively."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags, empty where ``cpuinfo`` does not exist (not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (read once per process)."""
    return bool(NATIVE_BF16_FLAGS & cpu_flags())
