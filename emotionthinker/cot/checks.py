"""Reading reasoning text back: response checks and a claim parser.

The parser extracts what a reasoning text asserts about the speaker and the
prosody (pitch/energy/speed level, intonation, stressed words, gender, age,
the quoted transcript) with character spans, so that

- the CoT writer can reject responses and the tests can prove that the offline
  composer never contradicts its annotation,
- the degrader can swap exactly the words that carry a claim,
- the evaluation stage can score factual alignment deterministically.

It is a lexicon-and-proximity parser, not a language model: it favours missing
a claim over inventing one (negated or comparative mentions are skipped).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from emotionthinker.cot import lexicon as lx

# --------------------------------------------------------------------------- text units
_TOKEN_RE = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")
_QUOTE_RES = (
    re.compile(r"“([^”]*)”"),
    re.compile(r'"([^"\n]*)"'),
    re.compile(r"‘([^’\n]{1,80})’(?!\w)"),
    re.compile(r"(?<![\w'])'(?=\S)([^'\n]{1,80}?)(?<=\S)'(?![\w])"),
)
_SENT_END_RE = re.compile(r"[.!?]+(?=\s|$)")
_WINDOW = 6  # tokens between a level word and its anchor


@dataclass(frozen=True)
class Quote:
    start: int  # interior span (without the quote marks)
    end: int
    text: str


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    text: str


def find_quotes(text: str) -> list[Quote]:
    """Quoted spans, non-overlapping, in text order."""
    taken: list[tuple[int, int]] = []
    out: list[Quote] = []
    for rx in _QUOTE_RES:
        for m in rx.finditer(text):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            taken.append((s, e))
            out.append(Quote(m.start(1), m.end(1), m.group(1)))
    return sorted(out, key=lambda q: q.start)


def mask_quotes(text: str, quotes: Iterable[Quote] | None = None) -> str:
    """Same-length copy with quote interiors blanked, so quoted words never count as claims."""
    chars = list(text)
    for q in quotes if quotes is not None else find_quotes(text):
        for i in range(q.start, q.end):
            chars[i] = " "
    return "".join(chars)


def split_sentences(text: str) -> list[Sentence]:
    """Sentences with offsets; punctuation inside quotes never ends a sentence."""
    masked = mask_quotes(text)
    out: list[Sentence] = []
    start = 0
    for m in _SENT_END_RE.finditer(masked):
        end = m.end()
        # a closing quote right after the terminator belongs to this sentence
        while end < len(text) and text[end] in "\"”’'":
            end += 1
        _add_sentence(text, start, end, out)
        start = end
    _add_sentence(text, start, len(text), out)
    return out


def _add_sentence(text: str, start: int, end: int, out: list[Sentence]) -> None:
    seg = text[start:end]
    lead = len(seg) - len(seg.lstrip())
    seg = seg.strip()
    if seg:
        out.append(Sentence(start + lead, start + lead + len(seg), seg))


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _TOKEN_RE.findall(text)]


def word_count(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


# --------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One assertion found in the text. ``start``/``end`` cover the words that carry the value."""

    attribute: str  # pitch_level|energy_level|speed_level|intonation|stressed_words|gender|age_level|transcript
    value: str
    start: int
    end: int
    surface: str
    sentence: int
    form: str = "word"  # adj|adv|compound|verb|quote|word|phrase: the degrader swaps like for like


CUE_ATTRIBUTES: tuple[str, ...] = ("pitch_level", "energy_level", "speed_level", "intonation", "stressed_words")
ALL_ATTRIBUTES: tuple[str, ...] = CUE_ATTRIBUTES + ("gender", "age_level", "transcript")


@dataclass
class _Tok:
    text: str  # lower-cased
    start: int
    end: int
    clause: int


_CLAUSE_PUNCT_RE = re.compile(r"[,;:()—–]| - ")


def _tokens(masked: str, offset: int) -> list[_Tok]:
    toks: list[_Tok] = []
    clause = 0
    prev_end = 0
    for m in _TOKEN_RE.finditer(masked):
        word = m.group().lower().replace("’", "'")
        if toks and (word in lx.CLAUSE_BREAK_WORDS or _CLAUSE_PUNCT_RE.search(masked, prev_end, m.start())):
            clause += 1
        toks.append(_Tok(word, offset + m.start(), offset + m.end(), clause))
        prev_end = m.end()
    return toks


_LEVEL_LOOKUP: dict[str, list[tuple[str, str]]] = {}
for _attr, _levels in lx.LEVEL_WORDS.items():
    for _val, _ws in _levels.items():
        for _w in _ws:
            _LEVEL_LOOKUP.setdefault(_w, []).append((_attr, _val))
_ANCHOR_LOOKUP: dict[str, str] = {w: a for a, ws in lx.ANCHORS.items() for w in ws}
_INTON_LOOKUP: dict[str, str] = {w: v for v, ws in lx.INTONATION_WORDS.items() for w in ws}
_RISE = r"(?:rises|rising|rise|climbs|climbing|goes up|lifts)"
_FALL = r"(?:falls|falling|fall|drops|dropping|dips|dipping|comes down|descends|descending|sinks|sinking)"
_RF_RE = re.compile(
    rf"\b(?:rise-fall|rising-falling|rise-and-fall|{_RISE}\b[^.;,:]{{0,30}}?\b(?:then|before|and)\b[^.;,:]{{0,12}}?\b{_FALL})\b"
)
_FR_RE = re.compile(
    rf"\b(?:fall-rise|falling-rising|fall-and-rise|{_FALL}\b[^.;,:]{{0,30}}?\b(?:then|before|and)\b[^.;,:]{{0,12}}?\b{_RISE})\b"
)
_STRESS_RE = re.compile(lx.STRESS_PATTERN)
# One alternation: leftmost match wins, and at one position the earlier (more specific) phrase wins.
_AGE_RE = re.compile(r"\b(?:" + "|".join(f"(?P<a{i}>{p})" for i, (p, _) in enumerate(lx.AGE_PHRASES)) + r")\b")
_AGE_VALUES = {f"a{i}": v for i, (_, v) in enumerate(lx.AGE_PHRASES)}
_STAY_VERBS = {"stays", "remains", "stay", "remain", "staying", "remaining", "moves", "move", "moving"}


def _negated(toks: list[_Tok], i: int) -> bool:
    for j in (i - 1, i - 2):
        if j >= 0 and toks[j].clause == toks[i].clause and toks[j].text in lx.NEGATORS:
            return True
    return False


def _nearest_anchor(toks: list[_Tok], i: int, lookup: dict[str, str], attrs: set[str]) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None  # (distance, prefer-following, attr)
    for j, t in enumerate(toks):
        if j == i or t.clause != toks[i].clause:
            continue
        attr = lookup.get(t.text)
        if attr is None or attr not in attrs:
            continue
        d = abs(j - i)
        if d > _WINDOW:
            continue
        key = (d, 0 if j > i else 1, attr)
        if best is None or key < best:
            best = key
    return (best[0], best[2]) if best else None


def _level_claims(toks: list[_Tok], text: str, sent_idx: int) -> list[Claim]:
    out: list[Claim] = []
    for i, t in enumerate(toks):
        cands = _LEVEL_LOOKUP.get(t.text, [])
        standalone = lx.STANDALONE_LEVEL_WORDS.get(t.text)
        if not cands and not standalone:
            continue
        if _negated(toks, i):
            continue
        found = _nearest_anchor(toks, i, _ANCHOR_LOOKUP, {a for a, _ in cands}) if cands else None
        if found:
            attr = found[1]
            value = dict(cands)[attr]
        elif standalone:
            attr, value = standalone
        else:
            continue
        form = "adv" if t.text in lx.ADVERB_LEVEL_WORDS else "compound" if t.text in lx.COMPOUND_LEVEL_WORDS else "adj"
        out.append(Claim(attr, value, t.start, t.end, text[t.start : t.end], sent_idx, form))
    return out


def _intonation_claims(masked_sent: str, offset: int, text: str, sent_idx: int) -> tuple[list[Claim], str]:
    """Compound contours first (and blank them), then single directions/styles near an anchor."""
    out: list[Claim] = []
    low = masked_sent.lower()
    for rx, value in ((_RF_RE, "rising-falling"), (_FR_RE, "falling-rising")):
        for m in rx.finditer(low):
            s, e = m.span()
            if not _has_inton_anchor_near(low, s, e):
                continue
            form = "adj" if "-" in m.group() and " " not in m.group() else "verb"
            out.append(Claim("intonation", value, offset + s, offset + e, text[offset + s : offset + e], sent_idx, form))
            low = low[:s] + " " * (e - s) + low[e:]
    return out, low


def _has_inton_anchor_near(low: str, s: int, e: int) -> bool:
    window = low[max(0, s - 60) : e + 60]
    return any(re.search(rf"\b{a}\b", window) for a in lx.INTONATION_ANCHORS)


def _simple_intonation(toks: list[_Tok], text: str, sent_idx: int) -> list[Claim]:
    out: list[Claim] = []
    inton_anchor = {w: "intonation" for w in lx.INTONATION_ANCHORS}
    other_anchor = {w: a for a, ws in lx.ANCHORS.items() if a != "pitch_level" for w in ws}
    for i, t in enumerate(toks):
        value = _INTON_LOOKUP.get(t.text)
        if value is None or _negated(toks, i):
            continue
        standalone = t.text in {"monotone", "monotonous", "sing-song"}
        near = _nearest_anchor(toks, i, inton_anchor, {"intonation"})
        if not near and not standalone:
            continue
        rival = _nearest_anchor(toks, i, other_anchor, set(other_anchor.values()))
        if rival and near and rival[0] < near[0]:
            continue  # "rising energy": the word describes another attribute
        start, form = t.start, "adj"
        if t.text in lx.INTONATION_VERB_SURFACES:
            form = "verb"
        elif i > 0 and toks[i - 1].clause == t.clause and toks[i - 1].text in _STAY_VERBS:
            start, form = toks[i - 1].start, "verb"  # "stays flat", "moves expressively"
        out.append(Claim("intonation", value, start, t.end, text[start : t.end], sent_idx, form))
    return out


def _trait_claims(toks: list[_Tok], masked_sent: str, offset: int, text: str, sent_idx: int) -> list[Claim]:
    out: list[Claim] = []
    for m in _AGE_RE.finditer(masked_sent.lower()):
        s, e = m.span()
        value = _AGE_VALUES[m.lastgroup or ""]
        out.append(Claim("age_level", value, offset + s, offset + e, text[offset + s : offset + e], sent_idx, "phrase"))
    for t in toks:
        g = lx.GENDER_WORDS.get(t.text)
        if g:
            out.append(Claim("gender", g, t.start, t.end, text[t.start : t.end], sent_idx, "word"))
    return out


def _transcript_match(quote_words: list[str], transcript_words: list[str]) -> str | None:
    """'exact' when the quote is a contiguous part of the transcript, 'misquote' when it mostly overlaps."""
    if not quote_words or not transcript_words:
        return None
    n = len(quote_words)
    for i in range(len(transcript_words) - n + 1):
        if transcript_words[i : i + n] == quote_words:
            return "exact" if n >= min(4, len(transcript_words)) else None
    if n >= min(3, len(transcript_words)):
        overlap = sum((Counter(quote_words) & Counter(transcript_words)).values())
        if overlap / n >= 0.5 and overlap >= min(2, len(transcript_words)):
            return "misquote"
    return None


def parse_claims(text: str, transcription: str | None = None) -> list[Claim]:
    """Every claim in ``text`` with its span, in text order."""
    quotes = find_quotes(text)
    masked = mask_quotes(text, quotes)
    sentences = split_sentences(text)
    t_words = words(transcription or "")
    claims: list[Claim] = []
    transcript_quotes: set[tuple[int, int]] = set()
    for q in quotes:
        qw = words(q.text)
        match = _transcript_match(qw, t_words) if t_words else ("exact" if len(qw) >= 4 else None)
        if match:
            transcript_quotes.add((q.start, q.end))
            claims.append(Claim("transcript", q.text, q.start, q.end, q.text, _sentence_of(sentences, q.start),
                                "quote" if match == "exact" else "misquote"))
    for si, s in enumerate(sentences):
        msent = masked[s.start : s.end]
        inton, msent_wo_compound = _intonation_claims(msent, s.start, text, si)
        toks = _tokens(msent_wo_compound, s.start)
        claims += inton
        claims += _simple_intonation(toks, text, si)
        claims += _level_claims(toks, text, si)
        claims += _trait_claims(toks, msent, s.start, text, si)  # intonation blanking never hides a trait word
        if _STRESS_RE.search(msent.lower()):
            for q in quotes:
                if s.start <= q.start < s.end and (q.start, q.end) not in transcript_quotes:
                    qw = words(q.text)
                    if 1 <= len(qw) <= 3:
                        claims.append(Claim("stressed_words", " ".join(qw), q.start, q.end, q.text, si, "quote"))
    return sorted(claims, key=lambda c: (c.start, c.attribute))


def _sentence_of(sentences: list[Sentence], pos: int) -> int:
    for i, s in enumerate(sentences):
        if s.start <= pos < s.end:
            return i
    return -1


# --------------------------------------------------------------------------- fact check
@dataclass
class ClaimVerdict:
    claim: Claim
    status: str  # supported | contradicted | unsupported (the annotation has no value to back it)
    expected: Any = None


@dataclass
class FactCheck:
    verdicts: list[ClaimVerdict] = field(default_factory=list)

    def by_status(self, status: str) -> list[ClaimVerdict]:
        return [v for v in self.verdicts if v.status == status]

    @property
    def n_supported(self) -> int:
        return len(self.by_status("supported"))

    @property
    def n_contradicted(self) -> int:
        return len(self.by_status("contradicted"))

    @property
    def n_unsupported(self) -> int:
        return len(self.by_status("unsupported"))

    @property
    def attributes_mentioned(self) -> set[str]:
        return {v.claim.attribute for v in self.verdicts}

    @property
    def contradicted_attributes(self) -> set[str]:
        return {v.claim.attribute for v in self.by_status("contradicted")}

    @property
    def ok(self) -> bool:
        """No claim contradicts the annotation and none asserts a cue the annotation lacks."""
        return self.n_contradicted == 0 and self.n_unsupported == 0

    def score(self) -> float | None:
        """Share of attributes mentioned without contradiction or unsupported claims; None if nothing is claimed."""
        attrs = self.attributes_mentioned
        if not attrs:
            return None
        bad = {v.claim.attribute for v in self.verdicts if v.status != "supported"}
        return 1.0 - len(bad) / len(attrs)

    def summary(self) -> dict[str, Any]:
        return {
            "supported": self.n_supported,
            "contradicted": self.n_contradicted,
            "unsupported": self.n_unsupported,
            "attributes": sorted(self.attributes_mentioned),
            "contradicted_attributes": sorted(self.contradicted_attributes),
            "score": self.score(),
        }


def compare_claims(claims: Iterable[Claim], annotations: dict[str, Any], transcription: str | None = None) -> FactCheck:
    """Judge each claim against the measured annotation (released EmotionCoT field names)."""
    fc = FactCheck()
    stressed = {w for s in annotations.get("stressed_words") or [] for w in words(s)}
    for c in claims:
        exp: Any = None
        if c.attribute in lx.LEVEL_ATTRIBUTES or c.attribute == "gender":
            exp = annotations.get(c.attribute)
            status = "unsupported" if exp in (None, "", "unknown") else ("supported" if c.value == exp else "contradicted")
        elif c.attribute == "age_level":
            exp = annotations.get("age_level")
            status = "unsupported" if exp in (None, "", "unknown") else ("supported" if c.value == exp else "contradicted")
        elif c.attribute == "intonation":
            exp = annotations.get("intonation")
            if exp in (None, "") or exp in lx.UNDETERMINED_INTONATION:
                status = "unsupported"
            else:
                status = "supported" if c.value == exp else "contradicted"
        elif c.attribute == "stressed_words":
            exp = sorted(stressed)
            if not stressed:
                status = "unsupported"
            else:
                status = "supported" if set(c.value.split()) & stressed else "contradicted"
        elif c.attribute == "transcript":
            exp = transcription
            if not transcription:
                status = "unsupported"
            else:
                status = "supported" if c.form == "quote" else "contradicted"
        else:  # pragma: no cover - attributes are closed
            status = "unsupported"
        fc.verdicts.append(ClaimVerdict(c, status, exp))
    return fc


def fact_check(text: str, record: dict[str, Any]) -> FactCheck:
    """Parse ``text`` and compare it with an annotated/EmotionCoT record."""
    transcription = record.get("transcription")
    return compare_claims(parse_claims(text, transcription), record.get("annotations") or {}, transcription)


# --------------------------------------------------------------------------- response checks
def _label_tokens(label: str) -> set[str]:
    return set(lx.LABEL_FORMS.get(label, [label]))


def sentences_naming_label(text: str, label: str) -> list[int]:
    """Indices of sentences that name the label (quotes ignored)."""
    forms = _label_tokens(label)
    masked = mask_quotes(text)
    return [i for i, s in enumerate(split_sentences(text)) if forms & set(words(masked[s.start : s.end]))]


def opens_with_label(text: str, label: str) -> bool:
    sents = split_sentences(text)
    return bool(sents) and 0 in sentences_naming_label(text, label)


def mentions_transcript(text: str, transcription: str | None, min_cover: float = 0.5) -> bool:
    """The transcript (or at least ``min_cover`` of it, contiguously) is quoted or reproduced."""
    tw = words(transcription or "")
    if not tw:
        return True  # nothing to quote
    for c in parse_claims(text, transcription):
        if c.attribute == "transcript" and c.form == "quote" and len(words(c.value)) >= max(1, min_cover * len(tw)):
            return True
    joined = " " + " ".join(words(text)) + " "
    return (" " + " ".join(tw) + " ") in joined


def clean_response(text: str | None) -> str:
    """Strip what chat models wrap reasoning in: think/answer tags, code fences, surrounding whitespace."""
    if not text:
        return ""
    t = text.strip()
    t = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", t)
    m = re.search(r"<think>(.*?)</think>", t, flags=re.S)
    if m:
        t = m.group(1)
    t = re.sub(r"<answer>.*?</answer>", "", t, flags=re.S)
    t = re.sub(r"</?(?:think|answer)>", "", t)
    return re.sub(r"[ \t]+", " ", t).strip()


def check_response(text: str, record: dict[str, Any], min_words: int = 50, max_words: int = 200) -> list[str]:
    """Problems that make a reasoning response unusable (empty list = accepted)."""
    if not text or not text.strip():
        return ["empty"]
    problems: list[str] = []
    n = word_count(text)
    if n < min_words:
        problems.append(f"too_few_words:{n}")
    if n > max_words:
        problems.append(f"too_many_words:{n}")
    if opens_with_label(text, record["emotion"]):
        problems.append("opens_with_label")
    if not mentions_transcript(text, record.get("transcription")):
        problems.append("no_transcript")
    return problems


# --------------------------------------------------------------------------- criterion evidence
# A conclusion is grounded when it refers back to the evidence (cues, delivery) or derives the label from it.
GROUNDED_CONCLUSION_RE = re.compile(
    r"\b(?:point\w*|suggest\w*|indicat\w*|converg\w*|explain\w*|adds? up|reveal\w*|emerg\w*|convey\w*|"
    r"evidence|cues?|signals?|signs?|observations?|delivery|voice|prosody|pitch|energy|loudness|pace|tempo|"
    r"intonation|contour|emphasis|stress|weigh\w*|together)\b"
)


@dataclass
class LinkAnalysis:
    """How cue sentences are tied to emotions (interpretative-quality evidence)."""

    cue_sentences: int
    linked_label: int  # cue sentences that tie the cue to the gold label's emotion family
    linked_other: int  # cue sentences tying a cue to another emotion
    unlinked: int  # cue sentences with no interpretation at all
    conclusion_index: int | None
    conclusion_grounded: bool  # the conclusion derives the label from the evidence


def _families_in(tokens: set[str]) -> set[str]:
    found = set()
    for label, fam in lx.EMOTION_FAMILY.items():
        if any(w in tokens or w + "s" in tokens for w in fam):
            found.add(label)
    return found


def analyze_links(text: str, label: str, claims: list[Claim] | None = None) -> LinkAnalysis:
    claims = parse_claims(text) if claims is None else claims
    sents = split_sentences(text)
    masked = mask_quotes(text)
    naming = sentences_naming_label(text, label)
    conclusion = naming[-1] if naming else None
    cue_sents = {c.sentence for c in claims if c.attribute in CUE_ATTRIBUTES} - ({conclusion} if conclusion is not None else set())
    linked_label = linked_other = unlinked = 0
    for si in cue_sents:
        fams = _families_in(set(words(masked[sents[si].start : sents[si].end])))
        if label in fams:
            linked_label += 1
        if fams - {label}:
            linked_other += 1
        if not fams:
            unlinked += 1
    grounded = False
    if conclusion is not None:
        grounded = bool(GROUNDED_CONCLUSION_RE.search(masked[sents[conclusion].start : sents[conclusion].end].lower()))
    return LinkAnalysis(len(cue_sents), linked_label, linked_other, unlinked, conclusion, grounded)


def fluency_signals(text: str, label: str) -> dict[str, int | bool]:
    """Surface signs of broken grammar or structure (fluency evidence)."""
    sents = split_sentences(text)
    lowercase_starts = sum(1 for s in sents if s.text[:1].isalpha() and s.text[:1].islower())
    missing_end = sum(1 for s in sents if s.text[-1:] not in ".!?\"”’")
    toks = words(mask_quotes(text))
    doubled = sum(1 for a, b in zip(toks, toks[1:]) if a == b and a.isalpha())
    naming = sentences_naming_label(text, label)
    return {
        "sentences": len(sents),
        "lowercase_starts": lowercase_starts,
        "missing_end_punct": missing_end,
        "doubled_words": doubled,
        "conclusion_last": bool(naming) and naming[-1] == len(sents) - 1,
    }


def criterion_evidence(text: str, record: dict[str, Any]) -> dict[str, Any]:
    """The measurable evidence behind each of the four reasoning criteria."""
    claims = parse_claims(text, record.get("transcription"))
    fc = compare_claims(claims, record.get("annotations") or {}, record.get("transcription"))
    links = analyze_links(text, record["emotion"], claims)
    return {
        "factual_alignment": {"contradicted": fc.n_contradicted, "unsupported": fc.n_unsupported,
                              "supported": fc.n_supported},
        # a misquote still covers the content (that is a factual problem, not a completeness one)
        "caption_completeness": {"attributes": sorted(fc.attributes_mentioned),
                                 "n_claims": len(claims)},
        "interpretative_quality": {"linked_label": links.linked_label, "linked_other": links.linked_other,
                                   "unlinked": links.unlinked, "conclusion_grounded": links.conclusion_grounded},
        "fluency_and_structural_clarity": fluency_signals(text, record["emotion"]),
        "claims": Counter((c.attribute, c.value) for c in claims),
    }


def sentence_skeleton(sentence: str) -> str:
    """Sentence shape with content slots abstracted: quotes -> Q, claim words -> slots, emotions -> E.

    Two sentences with the same skeleton share a structure; the count of distinct skeletons measures
    how varied a writer's sentence structures are.
    """
    quotes = find_quotes(sentence)
    masked = sentence
    for q in reversed(quotes):
        masked = masked[: q.start] + "Q" + masked[q.end :]
    emo = lx.emotion_words()
    slot_words = lx.all_claim_words()
    out = []
    for m in re.finditer(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[,;:—]", masked):
        w = m.group().lower()
        if w in emo or w.rstrip("s") in emo:
            out.append("E")
        elif w in lx.GENDER_WORDS:
            out.append("G")
        elif w in slot_words:
            out.append("C")
        else:
            out.append(w)
    return " ".join(out)
