"""Where a single small forward spends its time on a GPU host: one 16-token forward of the true-size
Qwen3-0.6B backbone (random weights), timed, then profiled with torch.profiler.

Run on a CUDA machine from the repository root: ``PYTHONPATH=. python3 scripts/profile_forward.py``.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from workers.engine.testing import random_guard_model


def main() -> None:
    device = torch.device("cuda")
    model = random_guard_model("0.6B", device=device, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (1, 16), device=device)
    with torch.no_grad():
        for _ in range(3):
            model.model(input_ids=ids)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            model.model(input_ids=ids)
        torch.cuda.synchronize()
        sys.stdout.write(f"16-token forward: {(time.perf_counter() - start) * 100:.1f} ms wall\n")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.model(input_ids=ids)
            torch.cuda.synchronize()
    sys.stdout.write(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12) + "\n")


if __name__ == "__main__":
    main()
