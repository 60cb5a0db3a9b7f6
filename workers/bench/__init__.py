"""Benchmarks behind ``streamwarden bench``: each prints ratios against a baseline measured in the same run."""

from __future__ import annotations
