"""Published prompt-classification F1 of Qwen3Guard-Stream, for the benchmarks we also run.

Source: Qwen3Guard technical report (arXiv:2510.14276v1), Table 2 + Table 11 (English prompt
classification, F1 x 100), as quoted in ``shared/reference/qwen3guard.md`` section 4.1. Only
benchmarks that are the same set as one of ours are listed: ToxiC = ToxicChat (test),
OpenAIMod = OpenAI moderation, SimpST = SimpleSafetyTests, HarmB = HarmBench prompts (the report
does not say which split; ours is the official test split). XSTest appears in the report only as
a response-classification benchmark, which is a different task from our XSTest prompt set.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PUBLISHED_SOURCE = "Qwen3Guard technical report, arXiv:2510.14276v1, Tables 2 and 11 (prompt F1)"

# model -> policy -> dataset -> F1 (0..100)
PUBLISHED_PROMPT_F1: Mapping[str, Mapping[str, Mapping[str, float]]] = MappingProxyType(
    {
        "Qwen3Guard-Stream-0.6B": {
            "strict": {
                "toxic_chat": 72.0,
                "openai_moderation": 68.3,
                "simple_safety_tests": 98.0,
                "harmbench": 97.2,
            },
            "loose": {
                "toxic_chat": 75.5,
                "openai_moderation": 76.0,
                "simple_safety_tests": 96.9,
                "harmbench": 96.8,
            },
        },
        "Qwen3Guard-Stream-4B": {
            "strict": {
                "toxic_chat": 73.0,
                "openai_moderation": 70.0,
                "simple_safety_tests": 99.5,
                "harmbench": 100.0,
            },
            "loose": {
                "toxic_chat": 81.7,
                "openai_moderation": 81.2,
                "simple_safety_tests": 98.5,
                "harmbench": 98.9,
            },
        },
        "Qwen3Guard-Stream-8B": {
            "strict": {
                "toxic_chat": 75.3,
                "openai_moderation": 74.0,
                "simple_safety_tests": 99.0,
                "harmbench": 99.4,
            },
            "loose": {
                "toxic_chat": 80.1,
                "openai_moderation": 80.3,
                "simple_safety_tests": 98.5,
                "harmbench": 98.7,
            },
        },
    }
)
