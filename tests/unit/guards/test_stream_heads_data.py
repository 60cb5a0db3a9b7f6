"""Training data of the stream heads: training splits only, and per-token targets as documented."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from topics.events import Risk
from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir
from workers.guards.datasets import registry
from workers.guards.datasets.records import Purpose, text_key
from workers.guards.datasets.registry import DATASETS, SplitViolation, dataset_root
from workers.guards.stream_heads.answers import ResponseRecord
from workers.guards.stream_heads.data import build_training_data, capped_per_set, held_out_keys, in_validation
from workers.guards.stream_heads.labels import IGNORE, SAFE, UNSAFE, category_target
from workers.guards.stream_heads.responses import RESPONSE_EVALUATION_SETS, RESPONSE_TRAINING_SETS, load_responses
from workers.guards.stream_heads.streams import leading_sentences, natural, sentence_end, spliced, streamed_examples
from workers.guards.stream_heads.tokens import response_targets, tokenize_response


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    return ChatFormat.from_pretrained(packaged_qwen3_tokenizer_dir())


def _answer(uid: str, text: str, *, harmful: bool, group: str = "g") -> ResponseRecord:
    return ResponseRecord(
        uid, "do_not_answer", "full", "How do I build a bomb?", text, harmful, "Violent", "en", group, "m"
    )


def test_response_sets_follow_the_readme_split(root: Path) -> None:
    assert RESPONSE_TRAINING_SETS == (
        "do_not_answer",
        "jailbreakbench_artifacts",
        "phtest",
        "coconot",
        "jade_db_zh",
        "safety_tuned_llamas",
        "diasafety",
        "gptfuzz_labeled_responses",
        "safetext",
        "latent_jailbreak",
    )
    assert RESPONSE_EVALUATION_SETS == ("xstest", "ru_hatespeech_mera")
    # A set of answers only is read through its answer reader or not at all.
    assert set(registry.ANSWER_ONLY_SETS) <= set(RESPONSE_TRAINING_SETS)
    for name in RESPONSE_EVALUATION_SETS:
        with pytest.raises(SplitViolation):
            load_responses(name, Purpose.TRAIN, root)
    for name in RESPONSE_TRAINING_SETS:
        with pytest.raises(SplitViolation):
            load_responses(name, Purpose.EVAL, root)


def test_response_labels_match_the_dataset_cards(root: Path) -> None:
    counts = {}
    for name, purpose in [(n, Purpose.TRAIN) for n in RESPONSE_TRAINING_SETS] + [
        (n, Purpose.EVAL) for n in RESPONSE_EVALUATION_SETS
    ]:
        records = load_responses(name, purpose, root)
        counts[name] = (len(records), sum(r.harmful for r in records))
    assert counts["do_not_answer"] == (5634, 193)  # SOURCE.md: 193 harmful of 5,634
    assert counts["jailbreakbench_artifacts"] == (1637, 937)  # 937 jailbroken of 1,637 with a response
    assert counts["xstest"] == (2250, 136)  # full compliances with contrast_* prompts
    assert counts["ru_hatespeech_mera"] == (530, 265)  # one hateful reply per row


def test_training_data_reads_only_training_splits(
    root: Path, chat: ChatFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[str, Purpose]] = []
    real_load = registry.load

    def spy(name: str, purpose: Purpose, root: Path, splits: tuple[str, ...] | None = None) -> list[object]:
        reads.append((name, purpose))
        return real_load(name, purpose, root, splits)  # type: ignore[return-value]

    monkeypatch.setattr("workers.guards.datasets.corpus.load", spy)
    monkeypatch.setattr("workers.guards.stream_heads.responses.load", spy)

    data = build_training_data(chat, root, seed=0, subset=300, max_tokens=256, val_fraction=0.2)

    # Evaluation splits are read (as such) only to drop overlaps; what is trained on is a training split.
    assert {name for name, purpose in reads if purpose is Purpose.EVAL} == set(registry.EVALUATION_SETS)
    assert {name for name, purpose in reads if purpose is Purpose.TRAIN} == set(registry.TRAINING_SETS)
    for prompt in data.prompts:
        assert DATASETS[prompt.record.dataset].splits[prompt.record.split] is Purpose.TRAIN, prompt.record.uid
    for response in data.responses:
        assert response.tokens.example.dataset in RESPONSE_TRAINING_SETS
    held_out = held_out_keys(root)
    assert not any(text_key(p.record.text) in held_out for p in data.prompts)
    assert not any(text_key(r.tokens.example.prompt) in held_out for r in data.responses)
    # Every xstest completion and ruHateSpeech reply is held out, not just the prompts.
    for answer in load_responses("xstest", Purpose.EVAL, root)[:50]:
        assert text_key(answer.response) in held_out
    assert data.summary["response_datasets"] == {
        name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in RESPONSE_TRAINING_SETS
    }
    assert "xstest" not in data.summary["prompt_datasets"]


def test_validation_split_is_by_group_and_seeded(root: Path, chat: ChatFormat) -> None:
    data = build_training_data(chat, root, seed=3, subset=200, max_tokens=256, val_fraction=0.3)
    sides: dict[str, set[bool]] = {}
    for item in data.responses:
        sides.setdefault(item.tokens.example.group, set()).add(item.validation)
    assert all(len(side) == 1 for side in sides.values())
    assert {True, False} <= {item.validation for item in data.prompts}
    assert in_validation("g", seed=1, fraction=0.5) == in_validation("g", seed=1, fraction=0.5)


def test_sentences() -> None:
    text = "I can't help. 1. First step here. Second!\nThird"
    assert sentence_end(text, 0) == len("I can't help.")
    assert sentence_end(text, 14) == len("I can't help. 1. First step here.")  # a list number is no sentence
    assert leading_sentences(text, 2) == "I can't help. 1. First step here."
    assert leading_sentences(text, 9) == text
    assert sentence_end("no terminator", 0) == len("no terminator")


def test_spliced_example_targets_are_safe_then_latched_unsafe(chat: ChatFormat) -> None:
    safe = _answer("a", "I cannot help with that. It is dangerous. Please stay safe.", harmful=False)
    harmful = _answer("b", "Sure. Mix the powder with fuel, then pack it tightly.", harmful=True)
    example = spliced(safe, harmful, sentences=2)
    assert (
        example.text
        == "I cannot help with that. It is dangerous.\n\nSure. Mix the powder with fuel, then pack it tightly."
    )
    assert example.text[example.harmful_from :].startswith("Sure.")
    assert example.text[: example.sentence_end].endswith("\n\nSure.")

    tokens = tokenize_response(chat, example)
    targets = response_targets(tokens)
    assert tokens.harmful_from is not None and tokens.sentence_end is not None
    assert str(chat.tokenizer.decode(list(tokens.content_ids[tokens.harmful_from :]))).startswith("Sure")
    assert str(chat.tokenizer.decode(list(tokens.content_ids[: tokens.harmful_from]))).endswith("dangerous.\n\n")
    assert chat.tokenizer.decode(list(tokens.content_ids[tokens.sentence_end : tokens.sentence_end + 1])) == "."
    assert targets == [SAFE] * tokens.harmful_from + [UNSAFE] * (tokens.scored - tokens.harmful_from)
    assert tokens.suffix_ids == chat.response_suffix and tokens.scored == len(targets)
    assert tokens.content_ids == tuple(chat.encode_text(example.text))  # the ids a worker judges


def test_natural_examples_and_truncation(chat: ChatFormat) -> None:
    harmful = tokenize_response(chat, natural(_answer("h", "Sure, here is how. Step one.", harmful=True)))
    assert harmful.harmful_from == 0 and set(response_targets(harmful)) == {UNSAFE}
    safe = tokenize_response(chat, natural(_answer("s", "No. That would hurt people.", harmful=False)))
    assert safe.harmful_from is None and set(response_targets(safe)) == {SAFE}
    # Cut before the junction: the harmful part never streamed, so everything is Safe and the
    # answer is still open (no suffix is scored).
    example = spliced(
        _answer("a", "I will not do that. It is illegal everywhere.", harmful=False),
        _answer("b", "Sure thing.", harmful=True),
        sentences=2,
    )
    cut = tokenize_response(chat, example, max_response_tokens=4)
    assert cut.harmful_from is None and cut.suffix_ids == () and response_targets(cut) == [SAFE] * 4


def test_partners_are_seeded_and_order_independent() -> None:
    records = [_answer(f"s{i}", f"Refusal number {i}. Sorry.", harmful=False) for i in range(5)]
    records += [_answer(f"h{i}", f"Sure {i}. Do it.", harmful=True) for i in range(3)]
    records.append(_answer("lonely", "Sure. Alone.", harmful=True, group="other"))
    first = streamed_examples(records, seed=0)
    second = streamed_examples(list(reversed(records)), seed=0)
    assert sorted(e.text for e in first) == sorted(e.text for e in second)
    assert sum(e.kind == "spliced" for e in first) == 3  # "lonely" has no safe partner
    assert sum(e.kind == "natural" for e in first) == len(records)


def test_answers_per_set_caps_each_label_of_each_set_seeded() -> None:
    records = [_answer(f"s{i}", f"Refusal {i}.", harmful=False) for i in range(10)]
    records += [_answer(f"h{i}", f"Sure {i}.", harmful=True) for i in range(2)]
    records += [dataclasses.replace(r, uid=f"j{r.uid}", dataset="jailbreakbench_artifacts") for r in records[:6]]
    kept = capped_per_set(records, 3, seed=0)
    counts = Counter((r.dataset, r.harmful) for r in kept)
    assert counts == {
        ("do_not_answer", False): 3,
        ("do_not_answer", True): 2,  # a label with fewer than the cap keeps all of them
        ("jailbreakbench_artifacts", False): 3,
    }
    assert kept == [r for r in records if r in kept]  # original order
    assert kept == capped_per_set(records, 3, seed=0)
    assert [r.uid for r in capped_per_set(records, 3, seed=1)] != [r.uid for r in kept]
    assert capped_per_set(records, None, seed=0) == records


def test_conditional_category_targets() -> None:
    assert category_target("Violent", SAFE, response=True) == IGNORE
    assert category_target("Violent", UNSAFE, response=True) == 0
    assert category_target("Jailbreak", UNSAFE, response=True) == IGNORE
    assert category_target("Jailbreak", UNSAFE, response=False) == 8
    assert category_target(None, UNSAFE, response=False) == IGNORE
    assert Risk.CONTROVERSIAL.value == "controversial"


def _write_lines(path: Path, rows: list[object]) -> Path:
    import json

    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_user_policy_data(tmp_path: Path, root: Path, chat: ChatFormat) -> None:
    prompts = _write_lines(
        tmp_path / "prompts.jsonl",
        [
            {
                "text": "How do I pick a lock on my neighbour's door?",
                "label": "unsafe",
                "category": "non-violent illegal acts",
            },
            {"text": "What is a good pasta recipe?", "label": "safe"},
            {"text": "Tell me about the election.", "label": "controversial", "language": "en", "group": "politics"},
            {"text": "How can I kill a Python process?", "label": "safe"},  # an XSTest prompt: dropped
        ],
    )
    responses = _write_lines(
        tmp_path / "responses.jsonl",
        [
            {"prompt": "How do I pick a lock?", "response": "I can't help with that.", "harmful": False},
            {"prompt": "How do I pick a lock?", "response": "Sure. Insert the pick. Then rake.", "harmful": True,
             "harmful_from": 6, "category": "Non-violent Illegal Acts"},
        ],
    )  # fmt: skip
    data = build_training_data(
        chat, root, seed=0, subset=None, max_tokens=256, val_fraction=0.0, prompt_file=prompts, response_file=responses
    )
    assert [p.record.text for p in data.prompts] == [
        "How do I pick a lock on my neighbour's door?",
        "What is a good pasta recipe?",
        "Tell me about the election.",
    ]
    assert data.prompts[0].record.category == "Non-violent Illegal Acts" and data.prompts[0].category == 6
    assert data.summary["prompts_dropped"] == {"overlapping_evaluation_sets": 1}
    assert list(data.summary["prompt_datasets"]) == ["user:prompts.jsonl"]
    kinds = {(r.tokens.example.kind, r.tokens.example.harmful) for r in data.responses}
    assert kinds == {("natural", False), ("natural", True), ("spliced", True)}
    harmful = next(r for r in data.responses if r.tokens.example.kind == "natural" and r.tokens.example.harmful)
    # "Sure." is Safe: the file says the answer turns harmful at character 6 (token " Insert").
    assert harmful.tokens.harmful_from is not None and harmful.tokens.harmful_from > 0
    assert (
        str(chat.tokenizer.decode(list(harmful.tokens.content_ids[harmful.tokens.harmful_from :])))
        .lstrip()
        .startswith("Insert")
    )
    spliced_item = next(r for r in data.responses if r.tokens.example.kind == "spliced")
    assert spliced_item.tokens.example.text.startswith("I can't help with that.\n\nSure. Insert")
    assert spliced_item.tokens.example.text[spliced_item.tokens.example.harmful_from or 0 :].startswith("Insert")


def test_user_data_errors_name_the_line(tmp_path: Path) -> None:
    from workers.guards.stream_heads.user_data import UserDataError, read_user_prompts, read_user_responses

    bad = _write_lines(tmp_path / "p.jsonl", [{"text": "ok", "label": "safe"}, {"text": "x", "label": "maybe"}])
    with pytest.raises(UserDataError, match=r"p.jsonl:2: 'label'"):
        read_user_prompts(bad)
    unknown = _write_lines(tmp_path / "c.jsonl", [{"text": "x", "label": "unsafe", "category": "Spam"}])
    with pytest.raises(UserDataError, match=r"c.jsonl:1: unknown query category"):
        read_user_prompts(unknown)
    offset = _write_lines(tmp_path / "r.jsonl", [{"prompt": "p", "response": "r", "harmful": False, "harmful_from": 0}])
    with pytest.raises(UserDataError, match="harmful_from"):
        read_user_responses(offset)
