"""Reward-model training tuples (q, r, g): gold reasoning and controlled degradations.

For every gold EmotionCoT record: the gold reasoning with g = (5, 5, 5, 5) and
degraded variants whose target score vector is drawn from Latin-hypercube
blocks (each block of five vectors uses every level 1-5 exactly once per
criterion), so every level of every criterion is equally covered.

Offline degradation works by construction, one criterion at a time, and each
operator touches only its own criterion's evidence (measured with the claim
parser in ``checks``):

- caption_completeness: drop sentences that carry cues or content;
- factual_alignment: swap measured values for wrong ones in place (levels,
  contour, gender, age, stressed word, a misquoted word) - same cues, wrong facts;
- interpretative_quality: replace the clause that ties a cue to the emotion by a
  non-sequitur or by another emotion, and make the conclusion unfounded;
- fluency_and_structural_clarity: grammar slips, typos, doubled words, shuffled
  sentences - never touching a claim, a quote or an emotion word.

The share of units changed sets the score: k of n units changed gives
5 - round(4k/n) (at least 1), and the recorded g is the score actually reached.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import (
    CUE_ATTRIBUTES,
    GROUNDED_CONCLUSION_RE,
    Claim,
    analyze_links,
    compare_claims,
    find_quotes,
    mask_quotes,
    parse_claims,
    sentences_naming_label,
    split_sentences,
    words,
)
from emotionthinker.cot.offline import fix_articles, record_rng
from emotionthinker.cot.prompt import CRITERIA, DEGRADE_PROMPT_VERSION, build_degrade_messages, prompt_hash
from emotionthinker.labels import LABELS, USER_PROMPT

LEVELS = (1, 2, 3, 4, 5)
DEGRADER_NAME = "offline-degrader"


# ------------------------------------------------------------------------- score design
def score_vectors(n: int, rng: random.Random) -> list[dict[str, int]]:
    """``n`` target vectors in Latin-hypercube blocks of five: within a block every criterion takes every
    level exactly once, so the levels are uniformly covered. (5, 5, 5, 5) never occurs (that is the gold).

    One coupling is built in: the vector with completeness 1 (a text reduced to a single cue or content
    sentence) gets factual and interpretative levels of 1 or 5, because a text that says one thing is
    either right or wrong about it; swapping values inside the block keeps the margins exact.
    """
    out: list[dict[str, int]] = []
    bare = "caption_completeness"
    while len(out) < n:
        perms = {c: rng.sample(LEVELS, 5) for c in CRITERIA}
        i1 = perms[bare].index(1)
        for c in ("factual_alignment", "interpretative_quality"):
            if perms[c][i1] not in (1, 5):
                j = rng.choice([x for x in range(5) if perms[c][x] in (1, 5)])
                perms[c][i1], perms[c][j] = perms[c][j], perms[c][i1]
        for i in range(5):
            if all(perms[c][i] == 5 for c in CRITERIA):
                c = rng.choice([c for c in CRITERIA if c != bare])
                j = rng.choice([x for x in range(5) if x not in (i, i1)])
                perms[c][i], perms[c][j] = perms[c][j], perms[c][i]
        out.extend({c: perms[c][i] for c in CRITERIA} for i in range(5))
    return out[:n]


def level_for(k: int, n: int) -> int:
    """Score reached when ``k`` of ``n`` units are damaged."""
    if k <= 0 or n <= 0:
        return 5
    return max(1, min(4, 5 - math.floor(4 * k / n + 0.5)))


def units_for(level: int, n: int) -> int:
    """How many of ``n`` units to damage to reach ``level`` as closely as the unit count allows."""
    if level >= 5 or n <= 0:
        return 0
    ideal = (5 - level) / 4 * n
    return min(range(1, n + 1), key=lambda k: (abs(level_for(k, n) - level), abs(k - ideal), k))


# ------------------------------------------------------------------------- text helpers
def _join(sentences: Iterable[str]) -> str:
    return " ".join(s.strip() for s in sentences if s.strip())


def _replace_spans(text: str, edits: list[tuple[int, int, str]]) -> str:
    for s, e, new in sorted(edits, key=lambda x: x[0], reverse=True):
        text = text[:s] + new + text[e:]
    return text


def _match_case(surface: str, new: str) -> str:
    return new[:1].upper() + new[1:] if surface[:1].isupper() else new


def _conclusion_index(text: str, label: str) -> int | None:
    naming = sentences_naming_label(text, label)
    return naming[-1] if naming else None


def claim_signature(text: str, transcription: str | None = None) -> Counter[tuple[str, str]]:
    """Multiset of (attribute, value) claims: what a text asserts, whatever its order or wording."""
    return Counter((c.attribute, c.value) for c in parse_claims(text, transcription))


@dataclass
class Step:
    text: str
    level: int  # score reached
    ops: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------- completeness
def degrade_completeness(text: str, record: dict[str, Any], level: int, rng: random.Random) -> Step:
    """Drop sentences that carry claims or the quoted content (never the conclusion)."""
    if level >= 5:
        return Step(text, 5)
    sents = split_sentences(text)
    concl = _conclusion_index(text, record["emotion"])
    claims = parse_claims(text, record.get("transcription"))
    units = sorted({c.sentence for c in claims} - {concl})
    # Level 1 keeps one unit: a text reduced to its conclusion would leave nothing to judge for the others.
    span = max(1, len(units) - 1)
    k = min(units_for(level, span), len(units))
    drop = set(rng.sample(units, k)) if k else set()
    kept = [s.text for i, s in enumerate(sents) if i not in drop]
    ops = [f"drop_sentence:{i}" for i in sorted(drop)]
    return Step(_join(kept), level_for(k, span), ops)


# ------------------------------------------------------------------------- factual
_FILLER_NOUNS = ["window", "garden", "table", "market", "river", "ladder", "basket", "pencil"]
_STOP = {"the", "a", "an", "by", "are", "is", "to", "of", "and", "in", "on", "at", "it", "i", "you", "we", "they"}


def _wrong_level(attr: str, value: str, rng: random.Random) -> str:
    values = lx.LEVEL_VALUES[attr]
    lo, hi = values[0], values[-1]
    if value == lo:
        return hi
    if value == hi:
        return lo
    return rng.choice([lo, hi])


def _swap_level(c: Claim, wrong: str) -> str:
    forms = lx.LEVEL_SWAP_FORMS[c.attribute]
    form = c.form if c.form in forms else "adj"
    return _match_case(c.surface, forms[form][wrong])


_INTON_VERB = dict(lx.INTONATION_SWAP_FORMS["verb"], expressive="moves expressively")


def _swap_intonation(c: Claim, wrong: str) -> str:
    table = _INTON_VERB if c.form == "verb" else lx.INTONATION_SWAP_FORMS["adj"]
    return _match_case(c.surface, table[wrong])


def _swap_gender_word(text: str, c: Claim) -> str:
    w = c.surface.lower()
    new = lx.GENDER_SWAP.get(w, w)
    if w == "her":  # possessive 'her X' -> 'his X'; object 'her.' -> 'him.'
        nxt = text[c.end : c.end + 20]
        new = "his" if re.match(r"\s+[A-Za-z]", nxt) else "him"
    return _match_case(c.surface, new)


def _swap_age(c: Claim, wrong: str, swap_gender: bool = False) -> str:
    """Another age group; a gender noun inside the phrase ('young girl') is kept (or swapped with gender)."""
    low = c.surface.lower()
    noun = ""
    for g, n in (("boy", "man"), ("girl", "woman"), ("man", "man"), ("woman", "woman"), ("men", "men"), ("women", "women")):
        if re.search(rf"\b{g}\b", low):
            noun = lx.GENDER_SWAP[n] if swap_gender else n
            break
    adj = lx.AGE_ADJ[wrong]
    if noun:
        new = f"{adj} {noun}"
    elif re.fullmatch(r"child(?:ren)?|seniors?|adolescents?|teenagers?|young[- ]adults?", low):
        new = f"{adj} speaker"
    else:
        new = adj
    return _match_case(c.surface, new)


def _fix_article_before(text: str, start: int, new: str) -> tuple[int, str]:
    """If 'a'/'an' precedes the replaced word, extend the edit so the article agrees."""
    m = re.search(r"\b([Aa]n?) $", text[max(0, start - 4) : start])
    if not m:
        return start, new
    art_start = start - len(m.group(0))
    fixed = fix_articles(f"{m.group(1)} {new}")
    return art_start, fixed


def degrade_factual(text: str, record: dict[str, Any], level: int, rng: random.Random) -> Step:
    """Contradict measured facts in place; the same cues stay mentioned, their values become wrong."""
    if level >= 5:
        return Step(text, 5)
    ann = record.get("annotations") or {}
    transcription = record.get("transcription")
    claims = parse_claims(text, transcription)
    fc = compare_claims(claims, ann, transcription)
    supported = [v.claim for v in fc.verdicts if v.status == "supported"]
    by_attr: dict[str, list[Claim]] = {}
    for c in supported:
        if c.attribute == "transcript" and len(words(c.value)) < 4:
            continue
        by_attr.setdefault(c.attribute, []).append(c)
    units = sorted(by_attr)
    k = units_for(level, len(units))
    chosen = rng.sample(units, k) if k else []
    edits: list[tuple[int, int, str]] = []
    ops: list[str] = []
    stressed = {w for s in ann.get("stressed_words") or [] for w in words(s)}
    age_spans = [(c.start, c.end) for c in by_attr.get("age_level", [])] if "age_level" in chosen else []
    for attr in chosen:
        cs = by_attr[attr]
        if attr == "gender":  # a gender noun inside an age phrase is rewritten by the age edit
            cs = [c for c in cs if not any(s <= c.start < e for s, e in age_spans)]
        if attr in lx.LEVEL_ATTRIBUTES:
            wrong = _wrong_level(attr, cs[0].value, rng)
            new_edits = [(c.start, c.end, _swap_level(c, wrong)) for c in cs]
        elif attr == "intonation":
            wrong = rng.choice([v for v in lx.INTONATIONS if v != cs[0].value])
            new_edits = [(c.start, c.end, _swap_intonation(c, wrong)) for c in cs]
        elif attr == "gender":
            wrong = "Female" if by_attr[attr][0].value == "Male" else "Male"
            new_edits = [(c.start, c.end, _swap_gender_word(text, c)) for c in cs]
        elif attr == "age_level":
            wrong = rng.choice([a for a in lx.AGE_ADJ if a != cs[0].value])
            new_edits = [(c.start, c.end, _swap_age(c, wrong, swap_gender="gender" in chosen)) for c in cs]
        elif attr == "stressed_words":
            pool = [w for w in words(transcription or "") if w not in stressed and w not in _STOP] or _FILLER_NOUNS
            wrong = rng.choice(pool)
            new_edits = [(c.start, c.end, wrong) for c in cs]
        elif attr == "transcript":
            c = cs[0]
            qw = re.findall(r"[A-Za-z']+", c.surface)
            # Longest first, ties by spelling: a set's order changes with the process's hash seed.
            cands = sorted({w for w in qw if w.lower() not in _STOP and w.lower() not in stressed},
                           key=lambda w: (-len(w), w))
            if not cands:
                continue
            target = cands[0]
            repl = rng.choice([n for n in _FILLER_NOUNS if n not in {w.lower() for w in qw}])
            new_quote = re.sub(rf"\b{re.escape(target)}\b", _match_case(target, repl), c.surface, count=1)
            wrong = f"misquote:{target}->{repl}"
            new_edits = [(c.start, c.end, new_quote)]
        else:
            continue
        for s, e, new in new_edits:
            s2, new2 = _fix_article_before(text, s, new)
            edits.append((s2, e, new2))
        ops.append(f"contradict:{attr}->{wrong}")
    new_text = _replace_spans(text, edits)
    # Score what was actually achieved, as measured by the parser.
    after = compare_claims(parse_claims(new_text, transcription), ann, transcription)
    reached = level_for(len(after.contradicted_attributes - fc.contradicted_attributes), len(units))
    return Step(new_text, reached, ops)


# ------------------------------------------------------------------------- interpretative
NON_SEQUITUR_REL = [
    "which mostly reflects how close the microphone was",
    "much like most sentences in this collection",
    "which is true of many recordings made in a studio",
    "as the room acoustics would lead one to expect",
    "which says more about the recording setup than about anything else",
]
NON_SEQUITUR_MAIN = [
    "the recording was probably made in a studio",
    "the microphone seems to sit close to the speaker",
    "the sentence is a common one in this collection",
    "the room acoustics are fairly dry",
]
MISMATCH_REL = ["which suggests {hint}", "pointing to {hint}", "a typical sign of {hint}"]
MISMATCH_MAIN = ["{hint} seems the likelier reading", "the impression is one of {hint}"]
UNFOUNDED_CONCLUSIONS = [
    "Since the clip was recorded in a studio, the emotion must be {noun}.",
    "For reasons that have little to do with any of this, the answer is {noun}.",
    "The emotion is {noun}, simply because it is the first option that comes to mind.",
    "Whatever else is going on, the label here is {noun}.",
]
_SUBORDINATORS = ("because", "since", "with", "given", "as", "if", "when", "while")


def _family_positions(masked_sentence: str) -> list[tuple[int, int, str]]:
    out = []
    for m in re.finditer(r"[A-Za-z]+(?:-[A-Za-z]+)*", masked_sentence):
        w = m.group().lower()
        for label, fam in lx.EMOTION_FAMILY.items():
            if w in fam or (w.endswith("s") and w[:-1] in fam):
                out.append((m.start(), m.end(), label))
                break
    return out


def _break_link(text: str, sent_start: int, sent_end: int, claims_end: int, mode: str, other: str,
                rng: random.Random) -> tuple[int, int, str] | None:
    """Edit replacing the interpretation clause of one cue sentence (None when there is none to replace)."""
    sentence = text[sent_start:sent_end]
    masked = mask_quotes(sentence)
    fams = [(s, e, lab) for s, e, lab in _family_positions(masked) if sent_start + s >= claims_end]
    if not fams:
        return None
    fs = fams[0][0]
    # start of the clause holding the first emotion word after the cue
    cut = max(masked.rfind(p, 0, fs) for p in (",", ";", "—", ":"))
    if cut < 0 or sent_start + cut < claims_end:
        return None
    body_end = len(sentence.rstrip())
    while body_end > 0 and sentence[body_end - 1] in ".!?":
        body_end -= 1
    punct = sentence[cut]
    main = sentence.lower().startswith(_SUBORDINATORS) or punct == ";"
    hint = rng.choice(lx.EMOTION_HINTS[other])
    if mode == "mismatch":
        clause = rng.choice(MISMATCH_MAIN if main else MISMATCH_REL).format(hint=hint)
    else:
        clause = rng.choice(NON_SEQUITUR_MAIN if main else NON_SEQUITUR_REL)
    return sent_start + cut + 1, sent_start + body_end, " " + clause


def degrade_interpretation(text: str, record: dict[str, Any], level: int, rng: random.Random) -> Step:
    """Cut the tie between cues and conclusion: non-sequiturs, cues read as other emotions, unfounded ending."""
    if level >= 5:
        return Step(text, 5)
    label = record["emotion"]
    sents = split_sentences(text)
    claims = parse_claims(text, record.get("transcription"))
    concl = _conclusion_index(text, label)
    masked = mask_quotes(text)
    units: list[tuple[str, int]] = []
    for i, s in enumerate(sents):
        if i == concl:
            continue
        cue_claims = [c for c in claims if c.sentence == i and c.attribute in CUE_ATTRIBUTES]
        if cue_claims and any(lab == label for *_, lab in _family_positions(masked[s.start : s.end])):
            units.append(("cue", i))
    if concl is not None and not any(c.sentence == concl for c in claims):
        units.append(("conclusion", concl))
    k = units_for(level, len(units))
    chosen = rng.sample(units, k) if k else []
    others = [lab for lab in LABELS if lab != label]
    edits: list[tuple[int, int, str]] = []
    ops: list[str] = []
    done = 0
    for kind, i in chosen:
        s = sents[i]
        if kind == "conclusion":
            new = rng.choice(UNFOUNDED_CONCLUSIONS).format(noun=lx.LABEL_NOUN[label])
            edits.append((s.start, s.end, new[0].upper() + new[1:]))
            ops.append("unfounded_conclusion")
            done += 1
            continue
        mode = "mismatch" if level <= 2 and rng.random() < 0.6 else "non_sequitur"
        other = rng.choice(others)
        claims_end = max(c.end for c in claims if c.sentence == i)
        edit = _break_link(text, s.start, s.end, claims_end, mode, other, rng)
        if edit is None:
            continue
        edits.append(edit)
        ops.append(f"{mode}:{i}" + (f"->{other}" if mode == "mismatch" else ""))
        done += 1
    return Step(_replace_spans(text, edits), level_for(done, len(units)), ops)


# ------------------------------------------------------------------------- fluency
_AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has", "does": "do",
              "sits": "sit", "stays": "stay", "carries": "carry", "comes": "come"}
_ARTICLES = {"the", "a", "an"}
_PROTECTED = lx.all_claim_words() | lx.emotion_words() | {w for ws in lx.CUE_NOUNS.values() for w in ws}


def _protected(word: str) -> bool:
    """Claim, cue, emotion and evidence words carry other criteria's evidence: fluency edits leave them alone."""
    return word in _PROTECTED or bool(GROUNDED_CONCLUSION_RE.fullmatch(word))


def _free_tokens(text: str) -> list[re.Match[str]]:
    """Word tokens an edit may touch: outside quotes and claims, not a cue/emotion/claim word."""
    quotes = find_quotes(text)
    masked = mask_quotes(text, quotes)
    claim_spans = [(c.start, c.end) for c in parse_claims(text)]
    out = []
    for m in re.finditer(r"[A-Za-z]+(?:['’-][A-Za-z]+)*", masked):
        if _protected(m.group().lower()):
            continue
        if any(s <= m.start() < e for s, e in claim_spans):
            continue
        if any(q.start - 1 <= m.start() <= q.end + 1 for q in quotes):
            continue
        out.append(m)
    return out


def _op_lowercase(text: str, rng: random.Random) -> str | None:
    sents = [s for s in split_sentences(text) if s.text[:1].isupper() and s.text[:1].isalpha()]
    if not sents:
        return None
    s = rng.choice(sents)
    return text[: s.start] + text[s.start].lower() + text[s.start + 1 :]


def _op_double(text: str, rng: random.Random) -> str | None:
    toks = [m for m in _free_tokens(text) if len(m.group()) > 1]
    if not toks:
        return None
    m = rng.choice(toks)
    return text[: m.end()] + " " + m.group().lower() + text[m.end() :]


def _op_drop_article(text: str, rng: random.Random) -> str | None:
    toks = [m for m in _free_tokens(text) if m.group().lower() in _ARTICLES and m.start() > 0]
    if not toks:
        return None
    m = rng.choice(toks)
    end = m.end() + 1 if text[m.end() : m.end() + 1] == " " else m.end()
    return text[: m.start()] + text[end:]


def _op_agreement(text: str, rng: random.Random) -> str | None:
    toks = [m for m in _free_tokens(text) if m.group().lower() in _AGREEMENT]
    if not toks:
        return None
    m = rng.choice(toks)
    return text[: m.start()] + _match_case(m.group(), _AGREEMENT[m.group().lower()]) + text[m.end() :]


def _op_typo(text: str, rng: random.Random) -> str | None:
    toks = [m for m in _free_tokens(text) if len(m.group()) >= 5 and m.group().isalpha()]
    if not toks:
        return None
    m = rng.choice(toks)
    w = m.group()
    i = rng.randrange(1, len(w) - 2)
    typo = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    if typo == w:
        typo = w[:i] + w[i + 1 :]  # doubled letters: drop one instead
    return text[: m.start()] + typo + text[m.end() :]


def _op_swap_words(text: str, rng: random.Random) -> str | None:
    toks = _free_tokens(text)
    pairs = [(a, b) for a, b in zip(toks, toks[1:]) if text[a.end() : b.start()] == " "]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return text[: a.start()] + b.group() + " " + a.group() + text[b.end() :]


_LIGHT_OPS = [_op_lowercase, _op_double, _op_drop_article, _op_agreement]
_HEAVY_OPS = _LIGHT_OPS + [_op_typo, _op_typo, _op_swap_words]


def _shuffle_sentences(text: str, rng: random.Random, full: bool) -> tuple[str, str]:
    sents = [s.text for s in split_sentences(text)]
    if len(sents) < 2:
        return text, ""
    if not full:
        i = rng.randrange(len(sents) - 1)
        sents[i], sents[i + 1] = sents[i + 1], sents[i]
        return _join(sents), f"swap_sentences:{i}"
    order = list(range(len(sents)))
    for _ in range(20):
        rng.shuffle(order)
        if order[-1] != len(sents) - 1 and order != sorted(order):
            break
    return _join(sents[i] for i in order), "shuffle_sentences"


def degrade_fluency(text: str, record: dict[str, Any], level: int, rng: random.Random) -> Step:
    """Grammar slips, typos and disorder, more for lower levels; claims, quotes and emotion words stay intact."""
    if level >= 5:
        return Step(text, 5)
    transcription = record.get("transcription")
    label = record["emotion"]
    n_sent = max(1, len(split_sentences(text)))
    budget = {4: 2, 3: n_sent, 2: 2 * n_sent, 1: 3 * n_sent}[level]
    pool = _LIGHT_OPS if level >= 3 else _HEAVY_OPS
    sig = claim_signature(text, transcription)
    links = _link_counts(text, label, transcription)
    ops: list[str] = []
    if level <= 3:
        text, op = _shuffle_sentences(text, rng, full=level <= 2)
        if op:
            ops.append(op)
    first = True
    attempts = 0
    while budget > 0 and attempts < budget * 5:
        attempts += 1
        op = _op_lowercase if first else rng.choice(pool)  # one detectable slip always
        new = op(text, rng)
        if new is None:
            first = False
            continue
        # an edit that changes what the text claims or how it links cues to emotions is not a fluency edit
        if claim_signature(new, transcription) != sig or _link_counts(new, label, transcription) != links:
            continue
        text, first = new, False
        ops.append(op.__name__.removeprefix("_op_"))
        budget -= 1
    return Step(text, level if ops else 5, ops)


def _link_counts(text: str, label: str, transcription: str | None) -> tuple[int, int, int, bool]:
    la = analyze_links(text, label, parse_claims(text, transcription))
    return la.linked_label, la.linked_other, la.unlinked, la.conclusion_grounded


# ------------------------------------------------------------------------- evidence per criterion
def criterion_signals(text: str, record: dict[str, Any]) -> dict[str, Any]:
    """The measurable evidence each criterion is judged on (from the claim parser), in comparable form.

    - factual_alignment: claims contradicting the annotation, claims it cannot back;
    - caption_completeness: which attributes are mentioned and how many claims are made;
    - interpretative_quality: cue sentences tied to another emotion or to none, and whether the
      conclusion refers back to the evidence;
    - fluency_and_structural_clarity: malformed sentence starts/ends, doubled words, conclusion last.
    """
    transcription = record.get("transcription")
    claims = parse_claims(text, transcription)
    fc = compare_claims(claims, record.get("annotations") or {}, transcription)
    links = analyze_links(text, record["emotion"], claims)
    from emotionthinker.cot.checks import fluency_signals

    flu = fluency_signals(text, record["emotion"])
    return {
        "factual_alignment": (fc.n_contradicted, fc.n_unsupported),
        "caption_completeness": (tuple(sorted(fc.attributes_mentioned)), len(claims)),
        "interpretative_quality": (links.linked_other + links.unlinked, links.conclusion_grounded),
        "fluency_and_structural_clarity": (flu["lowercase_starts"], flu["missing_end_punct"], flu["doubled_words"],
                                           flu["conclusion_last"]),
    }


def changed_criteria(before: str, after: str, record: dict[str, Any]) -> set[str]:
    """Criteria whose evidence differs between two texts: a single-criterion degradation must change its own only."""
    a, b = criterion_signals(before, record), criterion_signals(after, record)
    return {c for c in CRITERIA if a[c] != b[c]}


# ------------------------------------------------------------------------- one variant
DEGRADERS = {
    # applied in this order: drop first, so later operators work on what remains
    "caption_completeness": degrade_completeness,
    "factual_alignment": degrade_factual,
    "interpretative_quality": degrade_interpretation,
    "fluency_and_structural_clarity": degrade_fluency,
}


@dataclass
class Variant:
    text: str
    scores: dict[str, int]
    requested: dict[str, int]
    operations: dict[str, list[str]]


def degrade(text: str, record: dict[str, Any], target: dict[str, int], rng: random.Random) -> Variant:
    """Apply every criterion's operator at its target level; return the text and the scores reached."""
    scores: dict[str, int] = {}
    operations: dict[str, list[str]] = {}
    for criterion, fn in DEGRADERS.items():
        step = fn(text, record, int(target.get(criterion, 5)), rng)
        text = step.text
        scores[criterion] = step.level
        operations[criterion] = step.ops
    return Variant(text, {c: scores[c] for c in CRITERIA}, {c: int(target.get(c, 5)) for c in CRITERIA}, operations)


# ------------------------------------------------------------------------- tuples
def _question(rec: dict[str, Any]) -> dict[str, Any]:
    return {"audio_path": rec["audio_path"], "prompt": USER_PROMPT, "transcription": rec.get("transcription"),
            "emotion": rec["emotion"]}


def _tuple(rec: dict[str, Any], tid: str, text: str, g: dict[str, int], kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "record_id": rec["id"], "split": rec.get("split", "train"), "kind": kind, "q": _question(rec),
            "r": text, "g": g, **extra}


def iter_rm_tuples(cot_records: Iterable[dict[str, Any]], cfg: Any) -> Iterator[dict[str, Any]]:
    rm = cfg.rm_data
    records = sorted((r for r in cot_records if r.get("reasoning")), key=lambda r: r["id"])
    vectors = iter(score_vectors(len(records) * rm.variants_per_record, random.Random(f"rm-vectors:{rm.seed}")))
    client = cache = None
    if rm.writer == "llm":
        from emotionthinker.cot.cache import ResponseCache
        from emotionthinker.cot.client import ChatClient
        from emotionthinker.cot.writer import response_cache_path

        cache = ResponseCache(response_cache_path(cfg))
        client = ChatClient(cfg.cot, cache)
    try:
        for rec in records:
            gold = rec["reasoning"]
            if rm.include_gold:
                yield _tuple(rec, f"{rec['id']}#gold", gold, {c: 5 for c in CRITERIA}, "gold")
            for j in range(rm.variants_per_record):
                target = next(vectors)
                if client is None:
                    v = degrade(gold, rec, target, record_rng(rec["id"], rm.seed, f"rm{j}"))
                    yield _tuple(rec, f"{rec['id']}#v{j}", v.text, v.scores, "degraded", requested=v.requested,
                                 operations=v.operations, writer=DEGRADER_NAME)
                else:
                    yield _llm_variant(client, rec, gold, target, j, cfg)
    finally:
        if client is not None:
            client.close()
        if cache is not None:
            cache.close()


def _llm_variant(client: Any, rec: dict[str, Any], gold: str, target: dict[str, int], j: int, cfg: Any) -> dict[str, Any]:
    """Appendix D: the LLM rewrites the gold reasoning to the target scores (g = the target it was asked for)."""
    from emotionthinker.cot.client import CallFailed

    messages = build_degrade_messages(rec, gold, target)
    key = prompt_hash(messages, cfg.cot.model, cfg.cot.temperature, DEGRADE_PROMPT_VERSION) + f":{j}"
    try:
        res = client.complete(messages, check=lambda t: [] if t.strip() else ["empty"], cache_key=key)
    except CallFailed as exc:
        return _tuple(rec, f"{rec['id']}#v{j}", "", dict(target), "failed", error=str(exc), writer="openai-compatible")
    return _tuple(rec, f"{rec['id']}#v{j}", res.text, dict(target), "degraded", requested=dict(target),
                  writer="openai-compatible", model=cfg.cot.model, prompt_version=DEGRADE_PROMPT_VERSION)


def build_rm_tuples(cot_records: Iterable[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    """(q, r, g) tuples for the reward model; failed LLM rewrites are left out (``write_rm_tuples`` keeps them
    in its errors file; ``iter_rm_tuples`` yields them with kind 'failed')."""
    return [t for t in iter_rm_tuples(cot_records, cfg) if t["kind"] != "failed"]


def write_rm_tuples(cot_path: str | Path, out_path: str | Path, cfg: Any) -> dict[str, Any]:
    """Tuples for every record of an EmotionCoT file; failures to ``<out stem>.errors.jsonl``. Returns a summary."""
    from emotionthinker.cot.writer import errors_path_for
    from emotionthinker.records import iter_jsonl, write_jsonl

    tuples: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for t in iter_rm_tuples(iter_jsonl(cot_path), cfg):
        (failed if t["kind"] == "failed" else tuples).append(t)
    out_path = Path(out_path)
    write_jsonl(out_path, tuples)
    errors = errors_path_for(out_path)
    if failed:
        write_jsonl(errors, failed)
    elif errors.exists():
        errors.unlink()  # a stale errors file from an earlier run would misreport this one
    degraded = [t for t in tuples if t["kind"] == "degraded"]
    return {
        "out": str(out_path),
        "errors": str(errors) if failed else None,
        "n_tuples": len(tuples),
        "n_gold": sum(t["kind"] == "gold" for t in tuples),
        "n_degraded": len(degraded),
        "n_failed": len(failed),
        "histogram": score_histogram(tuples),
        # variants whose reached score differs from the requested one (too little text to damage)
        "n_off_target": sum(t.get("requested", t["g"]) != t["g"] for t in degraded),
    }


def score_histogram(tuples: Iterable[dict[str, Any]]) -> dict[str, dict[int, int]]:
    """Count of each score level 1-5 per criterion."""
    hist = {c: {lv: 0 for lv in LEVELS} for c in CRITERIA}
    for t in tuples:
        for c in CRITERIA:
            hist[c][int(t["g"][c])] += 1
    return hist
