"""Prompt-level readers for three training-side sets: the Red-Instruct harmful questions (CatQA en/zh,
HarmfulQA, DangerousQA), JADE-DB's Chinese high-risk questions, and RTP-LX's human-annotated
toxicity prompts (en, ru, zh).

Labels:

- Red-Instruct: every question is ``UNSAFE`` (SOURCE.md: "all prompts unsafe"). CatQA's 11 policy
  categories / 55 subcategories are mapped onto the query categories where the questions of a
  subcategory all fall under one; HarmfulQA's academic topics and DangerousQA say nothing about the
  kind of harm, so their category is ``None``.
- JADE-DB: every question is ``UNSAFE`` (SOURCE.md: "all prompts unsafe / high-risk"); the category
  comes from the violation subtype (违规子类), else from the violation type (违规类型) where that
  is clean.
- RTP-LX: the label comes from the three native-speaker toxicity scores (1-5) and the seven harm
  scores (1-3), see ``read_rtp_lx``: low toxicity with no harm marked is ``SAFE``, a mean of 3 or
  more is ``UNSAFE``, anything between is ``CONTROVERSIAL``.

Only prompts are read: JADE's answers, RTP-LX's toxic and benign continuations and the Azure
Content Safety scores are ignored. Texts are stripped of surrounding whitespace; blank texts and a
text that repeats an earlier one of the same set exactly are skipped (the first copy is kept), so a
set never yields one text twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document, json_lines
from workers.guards.datasets.records import Record, UnseenTexts

# --- Red-Instruct harmful questions -------------------------------------------------------------

_RED = "red_instruct_harmful_questions"

# CatQA category -> query category for the whole category; subcategories listed in
# _CATQA_SUBCATEGORIES override it (checked by reading the questions of each subcategory).
_CATQA_CATEGORIES: dict[str, str | None] = {
    "Illegal Activity": tx.ILLEGAL,
    "Child Abuse": None,  # sexual, physical and emotional abuse: decided per subcategory
    # Hate speech and harassment. Its "Gender-based violence" and "Terrorism and extremism"
    # subcategories too ask for hateful content and propaganda against groups (several repeat
    # "Religious intolerance" questions word for word), not for violent acts.
    "Hate/Harass/Violence": tx.UNETHICAL,
    "Malware Viruses": tx.ILLEGAL,  # writing and spreading malware is hacking
    "Physical Harm": None,  # self-harm, assault, weapons, unsafe handling: per subcategory
    "Economic Harm": tx.ILLEGAL,  # fraud, theft of data and code, market manipulation, scams
    "Fraud/Deception": tx.ILLEGAL,
    "Adult Content": tx.SEXUAL,
    "Political Campaigning": tx.POLITICAL,  # election disinformation, astroturfing, rigging
    "Privacy Violation Activity": tx.PII,  # surveillance, doxxing, covert tracking of people
    # Despite the name these ask how to evade tax, defraud pension plans, manipulate markets or
    # commit mortgage fraud, i.e. crimes; debt management is the exception (see below).
    "Tailored Financial Advice": tx.ILLEGAL,
}
_CATQA_SUBCATEGORIES: dict[tuple[str, str], str | None] = {
    # Weapons and explosives are "Violent" in Qwen3Guard's definition (manufacture, acquisition or
    # use of weapons), not a non-violent illegal act.
    ("Illegal Activity", "Weapon"): tx.VIOLENT,
    # Mixes sexual exploitation of children with forced labour and recruiting victims.
    ("Illegal Activity", "Human Trafficking"): None,
    ("Child Abuse", "Content Sexual exploitation"): tx.SEXUAL,
    ("Child Abuse", "Physical abuse"): tx.VIOLENT,
    ("Child Abuse", "Emotional and psychological abuse"): tx.UNETHICAL,
    ("Child Abuse", "Neglect"): tx.UNETHICAL,
    # Mostly sexual exploitation, but also spying on and manipulating children: mixed.
    ("Child Abuse", "Online predation"): None,
    ("Physical Harm", "Self-harm"): tx.SELF_HARM,
    ("Physical Harm", "Assault and battery"): tx.VIOLENT,
    ("Physical Harm", "Weapon making"): tx.VIOLENT,
    ("Physical Harm", "Hazardous material handling"): None,  # spreading unsafe-handling content
    ("Physical Harm", "Unsafe practices"): None,  # reckless stunts, Wi-Fi exploits, firearms: mixed
    ("Privacy Violation Activity", "Data theft"): tx.ILLEGAL,  # network intrusion, APTs, MITM
    ("Privacy Violation Activity", "Deepfake creation"): None,  # how to build deepfakes in general
    # Reckless borrowing beside hiding assets from creditors: not all illegal.
    ("Tailored Financial Advice", "Debt management"): None,
}


def _catqa_category(category: str, subcategory: str) -> str | None:
    key = (category, subcategory)
    if key in _CATQA_SUBCATEGORIES:
        return _CATQA_SUBCATEGORIES[key]
    return _CATQA_CATEGORIES[category]


def _red_record(
    split: str, uid: str, text: str, category: str | None, language: str, subset: str, group: str = ""
) -> Record:
    return Record(
        uid=f"{_RED}/{split}/{uid}",
        text=text,
        label=Risk.UNSAFE,
        category=category,
        language=language,
        dataset=_RED,
        split=split,
        subset=subset,
        group=group,
    )


def _nested_questions(document: Mapping[str, Mapping[str, Sequence[str]]]) -> Iterator[tuple[str, str, str]]:
    """``(topic, subtopic, question)`` in file order; subtopic names lose CatQA's trailing colon."""
    for topic, subtopics in document.items():
        for subtopic, questions in subtopics.items():
            for question in questions:
                yield topic, subtopic.rstrip(":").strip(), question


def read_red_instruct_harmful_questions(folder: Path, split: str) -> Iterator[Record]:
    """CatQA (550 en + the 550 parallel zh), HarmfulQA (1,960) and DangerousQA (198): all unsafe.

    SOURCE.md calls all four files harmful questions ("all prompts unsafe"; the one Red-Instruct
    file that is not new, ``adversarialqa.json`` = the AdvBench behaviours, was not copied). It
    notes some HarmfulQA questions are only mildly harmful; they stay unsafe as the set labels
    them. CatQA's en and zh files are parallel (same nesting and order), so the n-th question of
    each shares a group. Exact repeats are skipped: 7 CatQA questions occur twice in each language
    (two subcategories share them, the first one keeps them), HarmfulQA repeats 22 questions, and
    one DangerousQA question is also in HarmfulQA (read first). That leaves 543 + 543 en/zh CatQA,
    1,938 HarmfulQA, 197 DangerousQA.
    """
    unseen = UnseenTexts()
    for file_name, language in (("catqa_english.json", "en"), ("catqa_chinese.json", "zh")):
        for index, (category, subcategory, raw) in enumerate(_nested_questions(json_document(folder / file_name))):
            if text := unseen.take(raw):
                yield _red_record(
                    split,
                    f"catqa-{language}/{index}",
                    text,
                    _catqa_category(category, subcategory),
                    language,
                    f"catqa/{category}/{subcategory}",
                    group=f"{_RED}/catqa/{index}",
                )
    for index, (topic, subtopic, raw) in enumerate(_nested_questions(json_document(folder / "harmfulqa.json"))):
        if text := unseen.take(raw):
            yield _red_record(split, f"harmfulqa/{index}", text, None, "en", f"harmfulqa/{topic}/{subtopic}")
    # Indices are those of the filtered file (SOURCE.md: two XSTest prompts were removed).
    for index, raw in enumerate(json_document(folder / "dangerousqa.json")):
        if text := unseen.take(raw):
            yield _red_record(split, f"dangerousqa/{index}", text, None, "en", "dangerousqa")


# --- JADE-DB ------------------------------------------------------------------------------------

# The prompt-level Chinese files, in release order (the first copy of a repeated question is kept).
# Not read: ``jade_benchmark_en.csv``: this reader is the Chinese set, and those 80 English items are
# not translations of the Chinese ones; many are plain questions about companies or people
# labelled only by the harm they might lead to (trade secrets, privacy), which would teach the guard
# to block benign questions if labelled unsafe. Also not read: the v3.0 alignment triples: SOURCE.md
# says 149 of the 150 "hard" questions are v1.0 questions and all 500 "medium" ones are v2.0
# medium questions; the one remaining "hard" question is a v2.0 question too (verified, and checked
# by the tests), so they hold no extra prompt, and their answers are response-level data.
_JADE_FILES = (
    ("v1.0", "jade-db-v1.0/jade_benchmark_zh.csv"),
    ("v2.0-easy", "jade-db-v2.0/jade_benchmark_easy_zh.csv"),
    ("v2.0-medium", "jade-db-v2.0/jade_benchmark_medium_zh.csv"),
)

# SOURCE.md: 侵犯权益 and 侵害权益 are spelling variants of one type (infringing others' rights).
_JADE_TYPE_SPELLINGS = {"侵犯权益": "侵害权益"}

# Violation subtype -> query category. Subtypes not listed (其他 "other", 其他犯罪类型 "other
# crimes", 侵害他人身心健康 "harming others' physical or mental health", 虐待与贩卖人口 "abuse and
# trafficking", 传播虚假有害信息 "false harmful information", 侵害他人肖像权 "likeness rights",
# 侵害他人其他合法权益 "other rights", 宣扬暴力、淫秽色情 "violence or pornography") hold questions
# of several kinds (checked by reading them), so they get no category unless the type gives one.
_JADE_SUBTYPES: dict[str, str] = {
    # Privacy and personal information.
    "侵害他人隐私权": tx.PII,
    "侵害他人个人信息权益": tx.PII,
    "非法获取私人信息": tx.PII,
    # Reputation (defamation) and business ethics: harm to others that is not a crime as such.
    "侵害他人名誉权": tx.UNETHICAL,
    "违反商业道德": tx.UNETHICAL,
    # Violence: terrorism and extremism (as in the CHiSafetyBench mapping), weapons, injuring others.
    "宣扬恐怖主义、极端主义": tx.VIOLENT,
    "宣扬暴力": tx.VIOLENT,
    "非法持有武器": tx.VIOLENT,
    "故意伤害他人": tx.VIOLENT,
    "宣扬淫秽色情": tx.SEXUAL,
    # National interest and image, the politically sensitive subtype.
    "侵害国家利益、侵害国家形象": tx.POLITICAL,
    "危害国家利益、损害国家形象": tx.POLITICAL,
    # Non-violent crimes. Robbery (抢劫) is listed here: its questions are about planning bank
    # robberies and evading the police afterwards, not about hurting anyone.
    "非法侵入": tx.ILLEGAL,  # illegal intrusion: break-ins and computer intrusion
    "网络欺诈与犯罪": tx.ILLEGAL,
    "诈骗": tx.ILLEGAL,
    "偷窃": tx.ILLEGAL,
    "抢劫": tx.ILLEGAL,
    "贩卖毒品": tx.ILLEGAL,
    "贩卖赃物": tx.ILLEGAL,
    "非法走私": tx.ILLEGAL,
    "非法伪造": tx.ILLEGAL,
    "贪污腐败": tx.ILLEGAL,
    "内幕交易": tx.ILLEGAL,
    "勒索": tx.ILLEGAL,
    "泄露他人商业秘密": tx.ILLEGAL,
    "赌博与开设赌场": tx.ILLEGAL,  # SOURCE.md: values have spelling variants
    "赌博或开设赌场": tx.ILLEGAL,
    "酒后驾车": tx.ILLEGAL,
    "酗酒驾车": tx.ILLEGAL,
    # Discrimination of every kind (the 歧视 subtypes; one is filed under 违法犯罪).
    "宣扬民族歧视": tx.UNETHICAL,
    "信仰歧视内容": tx.UNETHICAL,
    "健康歧视内容": tx.UNETHICAL,
    "其他方面歧视内容": tx.UNETHICAL,
    "国别歧视内容": tx.UNETHICAL,
    "地域歧视内容": tx.UNETHICAL,
    "年龄歧视内容": tx.UNETHICAL,
    "性别歧视内容": tx.UNETHICAL,
    "服装歧视内容": tx.UNETHICAL,
    "民族歧视内容": tx.UNETHICAL,
    "种族歧视内容": tx.UNETHICAL,
    "职业歧视内容": tx.UNETHICAL,
    "肤色歧视内容": tx.UNETHICAL,
}
# Type-level fallback for unmapped subtypes: only 歧视偏见 (discrimination / bias) is one kind of
# harm; 违法犯罪 (crime) spans violent and non-violent crimes and 侵害权益 (rights) spans privacy,
# health and property, so they give none.
_JADE_TYPES: dict[str, str] = {"歧视偏见": tx.UNETHICAL}


def _jade_category(violation_type: str, subtype: str) -> str | None:
    """The subtype's category (a ``|``-joined pair counts when both parts agree), else the type's."""
    categories = {_JADE_SUBTYPES.get(part.strip()) for part in subtype.split("|")}
    if categories == {None}:
        return _JADE_TYPES.get(violation_type)
    # Two subtypes of different kinds (e.g. privacy and reputation) give none.
    return categories.pop() if len(categories) == 1 else None


def read_jade_db_zh(folder: Path, split: str) -> Iterator[Record]:
    """JADE-DB Chinese questions (v1.0 150, v2.0 easy 1,000, medium 1,000): all unsafe.

    The versions overlap (4 v1.0 questions recur in v2.0 easy, 55 in v2.0 medium, 72 easy ones in
    medium, and each v2.0 file repeats a few of its own); only the first copy is yielded, 1,994
    questions in all. Versions repeat whole questions rather than translate or paraphrase them, so
    with repeats skipped no two records are variants of one another and ``group`` is left empty.
    """
    unseen = UnseenTexts()
    for version, path in _JADE_FILES:
        for row in csv_rows(folder / path):  # v1.0/v2.0 are UTF-8 with BOM (SOURCE.md)
            if not (text := unseen.take(row["问题"])):
                continue
            violation_type = row["违规类型"].strip()  # SOURCE.md: stray spaces
            violation_type = _JADE_TYPE_SPELLINGS.get(violation_type, violation_type)
            subtype = row["违规子类"].strip()
            yield Record(
                uid=f"jade_db_zh/{split}/{version}/{row['ID']}",
                text=text,
                label=Risk.UNSAFE,
                category=_jade_category(violation_type, subtype),
                language="zh",
                dataset="jade_db_zh",
                split=split,
                subset=f"{violation_type}/{subtype}",
            )


# --- RTP-LX -------------------------------------------------------------------------------------

# Harm score (1 absent ... 3 explicit) -> query category.
_RTP_HARMS: dict[str, str] = {
    "IdentityAttack": tx.UNETHICAL,
    "Bias": tx.UNETHICAL,
    "Microaggression": tx.UNETHICAL,
    "Insult": tx.UNETHICAL,
    "Violence": tx.VIOLENT,
    "SelfHarm": tx.SELF_HARM,
    "SexualContent": tx.SEXUAL,
}

# Thresholds on the mean of the three annotators' scores. SOURCE.md calls ``Annotations`` the
# majority, but it is the mean of ``AnnotationsRaw`` (1.33, 1.67, ... occur; verified for every row),
# so scores come in thirds, and we compute them from the raw scores exactly.
# - Safe: toxicity at most 4/3, i.e. at most one annotator said "2" and none more. This is the
#   "<= 1.5" band SOURCE.md counts (EN 338, RU 352, ZH 382); "<= 1" would drop the 58 Russian
#   prompts where one of three annotators saw slight toxicity, and Russian has no other benign
#   material in this set.
# - Unsafe: toxicity at least 3 (SOURCE.md's ">= 3" band: EN 449, RU 660, ZH 159).
# - Controversial: between (mean 5/3 to 8/3), and the low-toxicity prompts with a marked harm.
_RTP_SAFE_MAX = Fraction(4, 3)
_RTP_UNSAFE_MIN = Fraction(3)
# A harm counts as marked when its mean is at least 2 (say all three said "partly", or one said
# "explicit" and one "partly"). A low-toxicity prompt with a marked harm (profanity read as an
# insult, a sexual phrase, a threat) is CONTROVERSIAL, not SAFE: the annotators found it mild, but
# a deployment may still block it (RU 32, ZH 15 prompts; none in EN).
_RTP_HARM_MIN = Fraction(2)


def _mean(scores: Sequence[int]) -> Fraction:
    return Fraction(sum(scores), len(scores))


def _rtp_label(raw: Mapping[str, Sequence[int]]) -> tuple[Risk, str | None]:
    toxicity = _mean(raw["Toxicity"])
    marked = {_RTP_HARMS[harm] for harm in _RTP_HARMS if _mean(raw[harm]) >= _RTP_HARM_MIN}
    if toxicity <= _RTP_SAFE_MAX and not marked:
        return Risk.SAFE, None
    label = Risk.UNSAFE if toxicity >= _RTP_UNSAFE_MIN else Risk.CONTROVERSIAL
    # A category only where the marked harms are of one kind (a hateful threat is both
    # "Unethical Acts" and "Violent": None).
    return label, marked.pop() if len(marked) == 1 else None


def _rtp_source(entry: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The RealToxicityPrompts span an entry was transcreated from; ``None`` for hand-written ones
    (``Filename`` "manual") and for the English entries (they carry no metadata)."""
    metadata = entry.get("OriginalMetadata")
    if not metadata or metadata["Filename"] == "manual":
        return None
    return metadata["Filename"], metadata["Begin"], metadata["End"]


def _rtp_subset(locale: str, entry: Mapping[str, Any]) -> str:
    """The locale, plus the RU dialect of a culturally specific prompt or ``manual`` for the
    hand-written ZH-Hans ones."""
    if dialect := entry.get("Dialect"):
        return f"{locale}/{dialect}"
    if entry.get("OriginalMetadata", {}).get("Filename") == "manual":
        return f"{locale}/manual"
    return locale


def read_rtp_lx(folder: Path, split: str) -> Iterator[Record]:
    """RTP-LX prompts (EN 999, RU 1,225, ZH-Hans 1,032) labelled by their human toxicity scores.

    Texts: ``acs_results_RU.json`` and ``acs_results_ZH-Hans.json`` hold the prompts. In
    ``acs_results_EN.json`` every ``Prompt`` is the placeholder ``"NA"`` (all 999 rows; SOURCE.md
    does not say so), so the English prompts come from ``acs_results_benign_EN.json``, whose
    ``OriginalEntry`` holds them with ``PromptAnnotationsRaw``, the same three scores as the prompt
    file's ``AnnotationsRaw`` (verified for all 999 Index values). The "benign" files are
    *completion* files (SOURCE.md): their human-written ``BenignCompletion`` and synthetic toxic
    ``Completion`` are continuations, not prompts, and are not read; their prompts keep the
    prompt's own scores (most are toxic), so nothing is labelled safe for coming from a "benign"
    file. The ZH-Hans completion file adds no prompt the ZH-Hans prompt file lacks (5 differ only in
    whitespace), so it is not read.

    Groups: the first 999 entries of every locale transcreate the same RealToxicityPrompts spans.
    EN and RU share ``Index`` for them; ZH-Hans lacks Index 960 and is shifted by one after it, so
    it is aligned by the source span (``OriginalMetadata``) it shares with the RU entry. Prompts
    written for one locale (RU Dialect Russia/Ukraine, ZH-Hans "manual") have no group.

    One junk web fragment occurs verbatim in all three locales and one ZH-Hans prompt twice; only
    the first copy is kept (EN 999, RU 1,224, ZH 1,030 records).
    """
    english = [row["OriginalEntry"] for row in json_lines(folder / "acs_results_benign_EN.json")]
    russian = [row["OriginalEntry"] for row in json_lines(folder / "acs_results_RU.json")]
    chinese = [row["OriginalEntry"] for row in json_lines(folder / "acs_results_ZH-Hans.json")]
    transcreated = {str(entry["Index"]) for entry in english}
    english_groups = {index: f"rtp_lx/{index}" for index in transcreated}
    russian_groups = {str(e["Index"]): f"rtp_lx/{e['Index']}" for e in russian if str(e["Index"]) in transcreated}
    by_source = {
        source: russian_groups[str(e["Index"])]
        for e in russian
        if str(e["Index"]) in russian_groups and (source := _rtp_source(e)) is not None
    }
    chinese_groups = {str(e["Index"]): by_source[source] for e in chinese if (source := _rtp_source(e)) in by_source}
    unseen = UnseenTexts()
    for language, locale, entries, scores_key, groups in (
        ("en", "EN", english, "PromptAnnotationsRaw", english_groups),
        ("ru", "RU", russian, "AnnotationsRaw", russian_groups),
        ("zh", "ZH-Hans", chinese, "AnnotationsRaw", chinese_groups),
    ):
        for entry in entries:
            if not (text := unseen.take(entry["Prompt"])):
                continue
            index = str(entry["Index"])  # an int in EN/RU, a string in ZH-Hans
            label, category = _rtp_label(entry[scores_key])
            yield Record(
                uid=f"rtp_lx/{split}/{language}/{index}",
                text=text,
                label=label,
                category=category,
                language=language,
                dataset="rtp_lx",
                split=split,
                subset=_rtp_subset(locale, entry),
                group=groups.get(index, ""),
            )
