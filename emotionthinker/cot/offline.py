"""Offline reasoning composer: grounded CoT text without an LLM endpoint.

Writes what the Appendix B.3 prompt asks of an LLM, from the same annotation:
a speaker profile, the prosodic cues with an interpretation tied to the label,
the quoted transcript, and a conclusion that names the emotion only at the end.

It is a small grammar: every part has alternative sentence templates and
interpretation clauses, chosen by a generator seeded from the record id, so a
rerun writes the same text and a data set shows many structures. It states
only cues the annotation has (no intonation when 'uncertain'/'too_short', no
stress without stressed words, no age when unknown), using surface words from
``lexicon`` so the claim parser can read every claim back.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any

from emotionthinker.cot import lexicon as lx
from emotionthinker.cot.checks import word_count, words

COMPOSER_NAME = "offline-composer"
COMPOSER_VERSION = "1"


def record_rng(record_id: str, seed: int = 0, salt: str = "") -> random.Random:
    """Deterministic per-record generator (independent of input order and of Python's hash seed)."""
    digest = hashlib.sha256(f"{seed}:{salt}:{record_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


_AN_EXCEPTIONS = ("usual", "unique", "unit", "useful", "one", "once", "european", "uniform")


def fix_articles(text: str) -> str:
    """'a' / 'an' agreement after words were substituted."""

    def repl(m: re.Match[str]) -> str:
        art, word = m.group(1), m.group(2)
        vowel = word[0].lower() in "aeiou" and not word.lower().startswith(_AN_EXCEPTIONS)
        new = "an" if vowel else "a"
        if art[0].isupper():
            new = new.capitalize()
        return f"{new} {word}"

    return re.sub(r"\b([Aa]n?) ([A-Za-z][\w-]*)", repl, text)


def _cap(s: str) -> str:
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1 :]
    return s


def _lower_first(s: str) -> str:
    """Lower-case the first letter when the clause moves mid-sentence (never the pronoun 'I')."""
    if not s or re.match(r"I\b", s):
        return s
    return s[0].lower() + s[1:]


# ------------------------------------------------------------------ vocabulary for levels
PITCH_ADJ = {"high": ["high", "raised", "elevated"], "low": ["low", "deep"],
             "normal": ["moderate", "mid-range", "ordinary"]}
PITCHED = {"high": "high", "low": "low", "normal": "in a moderate range"}
ENERGY_ADJ = {"high": ["high", "strong", "forceful"], "low": ["low", "weak", "subdued"],
              "normal": ["moderate", "medium", "ordinary"]}
ENERGY_ADV = {"high": ["loudly", "forcefully"], "low": ["softly", "quietly"], "normal": ["at a moderate volume"]}
LOUDNESS_ADJ = {"high": "high", "low": "low", "normal": "moderate"}
SPEED_ADJ = {"fast": ["quick", "fast", "brisk"], "slow": ["slow", "unhurried", "leisurely"],
             "normal": ["moderate", "ordinary", "medium"]}
SPEED_ADV = {"fast": ["quickly", "rapidly"], "slow": ["slowly"], "normal": ["at an ordinary rate", "at a moderate pace"]}
INTON_VERB = dict(lx.INTONATION_SWAP_FORMS["verb"])
INTON_VERB["expressive"] = "moves expressively"
INTON_ADJ = dict(lx.INTONATION_SWAP_FORMS["adj"])

# ------------------------------------------------------------------ interpretation clauses
# rel: follows a main clause after a comma/dash; main: a full clause after a subordinate cue clause.
SUPPORT_REL = [
    "which fits {hint}",
    "suggesting {hint}",
    "hinting at {hint}",
    "in keeping with {hint}",
    "a pattern that often goes with {hint}",
    "something listeners tend to hear as {hint}",
    "which is how {hint} tends to sound",
]
TEMPER_REL = [
    "which does not rule out {hint} but does not prove it either",
    "so any {hint} here is held in check",
    "a detail that sits less easily with {hint} without overturning it",
    "which tempers rather than contradicts an impression of {hint}",
    "so this cue offers only modest evidence of {hint}",
]
SUPPORT_MAIN = [
    "{hint} becomes a plausible reading",
    "an impression of {hint} starts to form",
    "{hint} is a natural first guess",
    "the listener is nudged toward {hint}",
    "the delivery already leans toward {hint}",
]
TEMPER_MAIN = [
    "any {hint} would have to be of a restrained kind",
    "this alone does not argue for {hint}",
    "the case for {hint} has to rest on the other cues",
    "it neither proves nor excludes {hint}",
]


@dataclass
class _Ctx:
    subj: str
    poss: str
    profile_np: str
    gender_adj: str
    label: str
    hints: list[str]
    ref: str = ""
    used: list[str] = field(default_factory=list)
    hint_queue: list[str] = field(default_factory=list)


@dataclass
class _Cue:
    kind: str  # pitch_level|energy_level|speed_level|intonation|stressed_words
    value: Any
    supports: bool


def _a_forms(cue: _Cue, ctx: _Ctx, rng: random.Random) -> list[tuple[str, str]]:
    """(template id, main-clause description) alternatives for one cue."""
    v, c = cue.value, rng.choice
    if cue.kind == "pitch_level":
        return [
            ("pA1", f"{_cap(ctx.poss)} pitch sits {c(PITCH_ADJ[v])}{ctx.ref}"),
            ("pA2", f"The voice is pitched {PITCHED[v]}{ctx.ref}"),
            ("pA3", f"A {c(PITCH_ADJ[v])} pitch runs through the utterance"),
            ("pA4", f"{_cap(ctx.subj)} speaks with a {c(PITCH_ADJ[v])} pitch"),
            ("pA5", f"The pitch stays {c(PITCH_ADJ[v])} across the sentence"),
        ]
    if cue.kind == "energy_level":
        return [
            ("eA1", f"The voice carries {c(ENERGY_ADJ[v])} energy"),
            ("eA2", f"Vocal effort is {c(ENERGY_ADJ[v])}"),
            ("eA3", f"{_cap(ctx.subj)} speaks {c(ENERGY_ADV[v])}"),
            ("eA4", f"The loudness is {LOUDNESS_ADJ[v]}"),
            ("eA5", f"The energy level stays {c(ENERGY_ADJ[v])} throughout"),
        ]
    if cue.kind == "speed_level":
        return [
            ("sA1", f"The pace is {c(SPEED_ADJ[v])}"),
            ("sA2", f"{_cap(ctx.subj)} talks at a {c(SPEED_ADJ[v])} tempo"),
            ("sA3", f"The words come out {c(SPEED_ADV[v])}"),
            ("sA4", f"The speaking rate is {c(SPEED_ADJ[v])}"),
            ("sA5", f"The delivery moves at a {c(SPEED_ADJ[v])} pace"),
        ]
    if cue.kind == "intonation":
        return [
            ("iA1", f"The intonation {INTON_VERB[v]}"),
            ("iA2", f"{_cap(ctx.poss)} melody {INTON_VERB[v]}"),
            ("iA3", f"The contour follows a {INTON_ADJ[v]} shape"),
            ("iA4", f"Across the sentence, the pitch contour {INTON_VERB[v]}"),
            ("iA5", f"The sentence carries a {INTON_ADJ[v]} intonation"),
        ]
    if cue.kind == "stressed_words":
        w, plural = _quote_words(v)
        return [
            ("wA1", f"{_cap(ctx.subj)} leans on {w}"),
            ("wA2", f"The stress lands on {w}"),
            ("wA3", f"Extra emphasis goes to {w}"),
            ("wA4", f"Of all the words, {w} {'are' if plural else 'is'} given the strongest emphasis"),
            ("wA5", f"The most prominent {'words are' if plural else 'word is'} {w}"),
        ]
    raise ValueError(cue.kind)


def _b_forms(cue: _Cue, ctx: _Ctx, rng: random.Random) -> list[tuple[str, str]]:
    """(template id, subordinate-clause description) alternatives for one cue."""
    v, c = cue.value, rng.choice
    if cue.kind == "pitch_level":
        return [
            ("pB1", f"Because {ctx.poss} pitch is {c(PITCH_ADJ[v])}"),
            ("pB2", f"With the pitch sitting {c(PITCH_ADJ[v])}"),
            ("pB3", f"Since the voice is pitched {PITCHED[v]}"),
            ("pB4", f"Given a {c(PITCH_ADJ[v])} pitch"),
        ]
    if cue.kind == "energy_level":
        return [
            ("eB1", f"Because the energy is {c(ENERGY_ADJ[v])}"),
            ("eB2", f"With {c(ENERGY_ADJ[v])} vocal energy"),
            ("eB3", f"Since {ctx.subj} speaks {c(ENERGY_ADV[v])}"),
            ("eB4", f"Given the {LOUDNESS_ADJ[v]} loudness"),
        ]
    if cue.kind == "speed_level":
        return [
            ("sB1", f"Because the tempo is {c(SPEED_ADJ[v])}"),
            ("sB2", f"With a {c(SPEED_ADJ[v])} pace"),
            ("sB3", f"Since the words come out {c(SPEED_ADV[v])}"),
            ("sB4", f"Given the {c(SPEED_ADJ[v])} speaking rate"),
        ]
    if cue.kind == "intonation":
        return [
            ("iB1", f"Because the intonation {INTON_VERB[v]}"),
            ("iB2", f"With a {INTON_ADJ[v]} contour"),
            ("iB3", f"Since {ctx.poss} melody {INTON_VERB[v]}"),
        ]
    if cue.kind == "stressed_words":
        w, _ = _quote_words(v)
        return [
            ("wB1", f"Because {ctx.subj} stresses {w}"),
            ("wB2", f"With the emphasis placed on {w}"),
            ("wB3", f"Since the stress lands on {w}"),
        ]
    raise ValueError(cue.kind)


def _quote_words(ws: list[str]) -> tuple[str, bool]:
    q = [f'"{w}"' for w in ws]
    if len(q) == 1:
        return q[0], False
    return ", ".join(q[:-1]) + " and " + q[-1], True


def _hint(ctx: _Ctx, rng: random.Random) -> str:
    """Next emotion hint, cycling through a shuffled list so one text rarely repeats a word."""
    if not ctx.hint_queue:
        ctx.hint_queue = list(ctx.hints)
        rng.shuffle(ctx.hint_queue)
    return ctx.hint_queue.pop()


def _cue_sentence(cues: list[_Cue], ctx: _Ctx, rng: random.Random) -> str:
    """One sentence describing one cue (or two with the same polarity) plus its interpretation."""
    supports = cues[0].supports
    rel_pool, main_pool = (SUPPORT_REL, SUPPORT_MAIN) if supports else (TEMPER_REL, TEMPER_MAIN)
    if len(cues) == 2:
        (id1, a1), (id2, a2) = rng.choice(_a_forms(cues[0], ctx, rng)), rng.choice(_a_forms(cues[1], ctx, rng))
        ri = rng.randrange(len(rel_pool))
        ctx.used.append(f"pair:{id1}+{id2}:r{ri}")
        return f"{a1}, and {_lower_first(a2)}, {rel_pool[ri].format(hint=_hint(ctx, rng))}."
    shape = rng.choice(["rel", "rel", "semi", "dash", "sub", "sub"])
    if shape == "sub":
        bid, b = rng.choice(_b_forms(cues[0], ctx, rng))
        mi = rng.randrange(len(main_pool))
        ctx.used.append(f"{bid}:m{mi}")
        return f"{b}, {main_pool[mi].format(hint=_hint(ctx, rng))}."
    aid, a = rng.choice(_a_forms(cues[0], ctx, rng))
    if shape == "semi":
        mi = rng.randrange(len(main_pool))
        ctx.used.append(f"{aid}:semi:m{mi}")
        return f"{a}; {main_pool[mi].format(hint=_hint(ctx, rng))}."
    ri = rng.randrange(len(rel_pool))
    ctx.used.append(f"{aid}:{shape}:r{ri}")
    sep = ", " if shape == "rel" else " — "
    return f"{a}{sep}{rel_pool[ri].format(hint=_hint(ctx, rng))}."


OPENINGS = [
    "The speaker is {np}, and the way {subj} talks deserves a close look.",
    "This is {np} speaking, so the first step is to listen to how the voice behaves.",
    "A single sentence is spoken here by {np}.",
    "Listening to the clip, I hear {np} saying one short line.",
    "The voice belongs to {np}, and its delivery is the main source of evidence.",
    "Before weighing the words, it helps to note that the voice is that of {np}.",
    "{NP} is talking in this recording, and the prosody deserves attention first.",
    "We are dealing with {np} here, so the vocal cues should be read against that profile.",
]
TRANSCRIPTS = [
    'The words themselves, "{t}", matter less here than the way they are delivered.',
    '{Subj} says "{t}", and the delivery tells more than the literal content.',
    'The sentence itself is "{t}", so the tone of voice has to do most of the work.',
    'On the content side we have "{t}", a line best judged by how it is said.',
    'The transcript reads "{t}"; the wording alone does not decide the emotion.',
    'What {subj} actually says is "{t}", and its meaning depends heavily on the delivery.',
    'Taken literally, "{t}" could be said in many moods, which shifts attention to the voice.',
]
QUESTION_TRANSCRIPTS = [
    'The line "{t}" is phrased as a question, but how it is voiced matters more than its form.',
]
NO_TRANSCRIPT = "No intelligible words come through, so the voice alone has to carry the judgement."
SYNTHESES = [
    "No single cue settles the matter, but together they form a consistent picture.",
    "Read together, these signals pull in one direction.",
    "The cues are not equally telling, yet most of them lean the same way.",
    "Set side by side, the vocal signs tell a coherent story.",
]
CONCLUSIONS = [
    "Weighing the {cues} together, the most coherent reading is {noun}.",
    "All things considered, the {cues} point toward {noun}.",
    "Putting these observations side by side, the speaker most likely {pred}.",
    "Given how the {cues} line up, I would identify the emotion as {noun}.",
    "The evidence therefore converges on {noun}.",
    "In the end, {noun} is the reading that best explains the {cues}.",
    "So the emotion that emerges from this delivery is {noun}.",
    "Everything considered, the voice conveys {noun}.",
]
FILLER = "It is worth listening past the words to the voice itself before deciding anything."


def _profile(ann: dict[str, Any]) -> tuple[str, str, str, str]:
    """(noun phrase, subject pronoun, possessive, gender adjective) from gender and age."""
    gender = ann.get("gender")
    age = ann.get("age_level")
    if gender not in lx.GENDERS:
        noun, subj, poss, gadj = "speaker", "the speaker", "the speaker's", ""
    else:
        male = gender == "Male"
        noun = "man" if male else "woman"
        subj, poss, gadj = ("he", "his", "male") if male else ("she", "her", "female")
    if age == "Child" and gender in lx.GENDERS:
        np_ = "a young boy" if gender == "Male" else "a young girl"
    elif age in lx.AGE_ADJ:
        np_ = f"a {lx.AGE_ADJ[age]} {noun}"
    else:
        np_ = f"a {noun}"
    return fix_articles(np_), subj, poss, gadj


def _cues(ann: dict[str, Any], label: str) -> list[_Cue]:
    typical = lx.TYPICAL_CUES.get(label, {})
    cues: list[_Cue] = []
    for attr in lx.LEVEL_ATTRIBUTES:
        v = ann.get(attr)
        if v in lx.LEVEL_VALUES[attr]:
            cues.append(_Cue(attr, v, v in typical.get(attr, set())))
    inton = ann.get("intonation")
    if inton in lx.INTONATIONS:
        cues.append(_Cue("intonation", inton, inton in typical.get("intonation", set())))
    stressed = [w for s in ann.get("stressed_words") or [] for w in words(s)]
    stressed = list(dict.fromkeys(stressed))[:3]
    if stressed:
        cues.append(_Cue("stressed_words", stressed, label in lx.STRESS_SUPPORTS))
    return cues


def _transcript_text(t: str) -> str:
    t = t.strip().replace('"', "'").replace("“", "'").replace("”", "'")
    return t.rstrip(".")


@dataclass
class Composition:
    text: str
    templates: list[str]


def compose(record: dict[str, Any], seed: int = 0, min_words: int = 50, max_words: int = 200) -> Composition:
    """Reasoning for one annotated record; the same record and seed always give the same text."""
    label = record["emotion"]
    ann = record.get("annotations") or {}
    rng = record_rng(record["id"], seed, "compose")
    np_, subj, poss, gadj = _profile(ann)
    ref = ""
    calib = ((record.get("prosody") or {}).get("calibration") or {}).get("pitch")
    if calib and gadj and "/" in str(calib) and rng.random() < 0.5:
        ref = f" for a {gadj} voice"
    ctx = _Ctx(subj, poss, np_, gadj, label, list(lx.EMOTION_HINTS[label]), ref)

    oi = rng.randrange(len(OPENINGS))
    opening = OPENINGS[oi].format(np=np_, NP=_cap(np_), subj=subj)
    ctx.used.append(f"open{oi}")

    transcript = (record.get("transcription") or "").strip()
    if transcript:
        t = _transcript_text(transcript)
        pool = TRANSCRIPTS + (QUESTION_TRANSCRIPTS if t.endswith("?") else [])
        ti = rng.randrange(len(pool))
        t_sentence = pool[ti].format(t=t, subj=subj, Subj=_cap(subj))
        ctx.used.append(f"trans{ti}")
    else:
        t_sentence = NO_TRANSCRIPT
        ctx.used.append("trans-none")

    cues = _cues(ann, label)
    supporting = [c for c in cues if c.supports]
    tempering = [c for c in cues if not c.supports]
    rng.shuffle(supporting)
    rng.shuffle(tempering)
    cue_sentences: list[str] = []
    for group in (supporting, tempering):
        i = 0
        while i < len(group):
            if i + 1 < len(group) and rng.random() < 0.25 and "stressed_words" not in (group[i].kind, group[i + 1].kind):
                cue_sentences.append(_cue_sentence(group[i : i + 2], ctx, rng))
                i += 2
            else:
                cue_sentences.append(_cue_sentence([group[i]], ctx, rng))
                i += 1

    cue_names = [rng.choice(lx.CUE_NOUNS[c.kind]) for c in (supporting + tempering)][:3]
    if not cue_names:
        cue_names = ["voice"]
    cue_list = cue_names[0] if len(cue_names) == 1 else ", ".join(cue_names[:-1]) + " and " + cue_names[-1]
    ci = rng.randrange(len(CONCLUSIONS))
    conclusion = CONCLUSIONS[ci].format(cues=cue_list, noun=lx.LABEL_NOUN[label], pred=lx.LABEL_PREDICATE[label])
    conclusion = _cap(conclusion)
    ctx.used.append(f"concl{ci}")

    body = [opening]
    early_transcript = rng.random() < 0.5
    if early_transcript:
        body.append(t_sentence)
    body += cue_sentences
    if not early_transcript:
        body.append(t_sentence)
    synth = None
    if rng.random() < 0.4:
        si = rng.randrange(len(SYNTHESES))
        synth = SYNTHESES[si]
        ctx.used.append(f"synth{si}")
    parts = body + ([synth] if synth else []) + [conclusion]
    text = fix_articles(" ".join(parts))
    if word_count(text) < min_words:
        extra = [s for s in SYNTHESES if s not in parts][:1] + [FILLER]
        parts = body + extra + [conclusion]
        ctx.used.append("filler")
        text = fix_articles(" ".join(parts))
    if word_count(text) > max_words and synth:
        parts = body + [conclusion]
        text = fix_articles(" ".join(parts))
    return Composition(text, ctx.used)
