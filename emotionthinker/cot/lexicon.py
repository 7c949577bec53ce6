"""Shared vocabulary of prosodic claims, speaker traits and emotion words.

One lexicon serves three readers that must agree: the offline composer writes
only surface forms listed here, the claim parser reads them back, and the
degrader swaps one value for another of the same grammatical form. Keeping
them in one table is what makes "the composer never contradicts its
annotation" and "a degradation only changes its own criterion" testable.
"""

from __future__ import annotations

from emotionthinker.labels import LABELS

LEVEL_ATTRIBUTES: tuple[str, ...] = ("pitch_level", "energy_level", "speed_level")
INTONATIONS: tuple[str, ...] = ("rising", "falling", "rising-falling", "falling-rising", "flat", "expressive")
UNDETERMINED_INTONATION: frozenset[str] = frozenset({"uncertain", "too_short"})
AGE_LEVELS: tuple[str, ...] = ("Child", "Teenager", "Young Adult", "Middle-aged", "Elderly")
GENDERS: tuple[str, ...] = ("Male", "Female")
LEVEL_VALUES: dict[str, tuple[str, ...]] = {
    "pitch_level": ("low", "normal", "high"),
    "energy_level": ("low", "normal", "high"),
    "speed_level": ("slow", "normal", "fast"),
}

# --- levels -----------------------------------------------------------------
# Words that name a level only when an anchor of the attribute is nearby.
_NORMAL_WORDS = ["moderate", "normal", "average", "medium", "mid-range", "ordinary", "typical", "middling"]
LEVEL_WORDS: dict[str, dict[str, list[str]]] = {
    "pitch_level": {
        "high": ["high", "higher", "raised", "elevated", "heightened", "upper"],
        "low": ["low", "lower", "lowered", "deep", "deeper"],
        "normal": _NORMAL_WORDS,
    },
    "energy_level": {
        "high": ["high", "strong", "loud", "louder", "forceful", "intense", "raised", "elevated", "heightened", "powerful"],
        "low": ["low", "weak", "soft", "softer", "quiet", "quieter", "subdued", "faint", "reduced", "muted"],
        "normal": _NORMAL_WORDS,
    },
    "speed_level": {
        "fast": ["fast", "faster", "quick", "quicker", "rapid", "brisk", "hurried", "swift", "high", "higher"],
        "slow": ["slow", "slower", "unhurried", "leisurely", "sluggish", "drawn-out", "low", "lower"],
        "normal": _NORMAL_WORDS,
    },
}
# Words that carry attribute and level by themselves (no anchor needed).
STANDALONE_LEVEL_WORDS: dict[str, tuple[str, str]] = {
    "high-pitched": ("pitch_level", "high"),
    "low-pitched": ("pitch_level", "low"),
    "shrill": ("pitch_level", "high"),
    "loudly": ("energy_level", "high"),
    "loud": ("energy_level", "high"),
    "forcefully": ("energy_level", "high"),
    "high-energy": ("energy_level", "high"),
    "low-energy": ("energy_level", "low"),
    "softly": ("energy_level", "low"),
    "quietly": ("energy_level", "low"),
    "faintly": ("energy_level", "low"),
    "soft-spoken": ("energy_level", "low"),
    "quiet": ("energy_level", "low"),
    "quickly": ("speed_level", "fast"),
    "rapidly": ("speed_level", "fast"),
    "hurriedly": ("speed_level", "fast"),
    "swiftly": ("speed_level", "fast"),
    "briskly": ("speed_level", "fast"),
    "fast-paced": ("speed_level", "fast"),
    "rushed": ("speed_level", "fast"),
    "slowly": ("speed_level", "slow"),
    "unhurriedly": ("speed_level", "slow"),
    "slow-paced": ("speed_level", "slow"),
}
ANCHORS: dict[str, list[str]] = {
    "pitch_level": ["pitch", "pitched", "f0", "register"],
    "energy_level": ["energy", "loudness", "volume", "intensity", "effort", "force", "projection", "amplitude"],
    "speed_level": ["pace", "tempo", "speed", "rate", "paced", "pacing"],
}
# Replacement surfaces by grammatical form, used by the degrader to contradict a claim.
LEVEL_SWAP_FORMS: dict[str, dict[str, dict[str, str]]] = {
    # form -> value -> surface
    "pitch_level": {
        "adj": {"high": "high", "low": "low", "normal": "moderate"},
        "compound": {"high": "high-pitched", "low": "low-pitched", "normal": "moderately pitched"},
    },
    "energy_level": {
        "adj": {"high": "high", "low": "low", "normal": "moderate"},
        "adv": {"high": "loudly", "low": "softly", "normal": "at moderate volume"},
        "compound": {"high": "high-energy", "low": "low-energy", "normal": "moderate-energy"},
    },
    "speed_level": {
        "adj": {"fast": "fast", "slow": "slow", "normal": "moderate"},
        "adv": {"fast": "quickly", "slow": "slowly", "normal": "at an ordinary rate"},
        "compound": {"fast": "fast-paced", "slow": "slow-paced", "normal": "moderately paced"},
    },
}
ADVERB_LEVEL_WORDS = {"loudly", "forcefully", "softly", "quietly", "faintly", "quickly", "rapidly", "hurriedly", "swiftly",
                      "briskly", "slowly", "unhurriedly"}
COMPOUND_LEVEL_WORDS = {"high-pitched", "low-pitched", "high-energy", "low-energy", "fast-paced", "slow-paced", "soft-spoken"}

# Tokens that cancel a level word right after them ("not fast", "rather than slow").
NEGATORS = {"not", "no", "never", "neither", "nor", "hardly", "barely", "without", "than", "instead", "lacks", "lack",
            "lacking", "isn't", "wasn't", "doesn't", "aren't", "nothing"}
# Tokens that end a clause for level association; a level word never binds across them.
CLAUSE_BREAK_WORDS = {"and", "but", "while", "whereas", "yet", "although", "though", "so", "which", "because", "since"}

# --- intonation ---------------------------------------------------------------
INTONATION_ANCHORS = ["intonation", "contour", "melody", "inflection", "inflexion", "tune", "pitch", "cadence"]
# Word families; the degrader maps a surface to the same form of another value.
INTONATION_WORDS: dict[str, list[str]] = {
    "rising": ["rising", "rises", "rise", "climbs", "climbing", "upward", "upturn", "lifts"],
    "falling": ["falling", "falls", "fall", "drops", "dropping", "downward", "descends", "descending", "sinks", "sinking",
                "dips", "dipping"],
    "flat": ["flat", "monotone", "monotonous", "unvarying"],
    "expressive": ["expressive", "expressively", "animated", "wide-ranging", "varied", "sing-song", "swooping"],
}
INTONATION_SWAP_FORMS: dict[str, dict[str, str]] = {
    # form -> value -> surface
    "adj": {"rising": "rising", "falling": "falling", "rising-falling": "rise-fall", "falling-rising": "fall-rise",
            "flat": "flat", "expressive": "expressive"},
    "verb": {"rising": "rises toward the end", "falling": "falls toward the end", "rising-falling": "rises and then falls",
             "falling-rising": "dips and then rises", "flat": "stays flat", "expressive": "moves in an expressive way"},
}
INTONATION_VERB_SURFACES = {"rises", "climbs", "lifts", "falls", "drops", "descends", "sinks", "dips"}

# --- stress -------------------------------------------------------------------
STRESS_PATTERN = (
    r"\b(?:stress(?:es|ed|ing)?|emphas\w*|accent(?:s|ed|uates?|uated)?|prominen\w*|punch(?:es|ed)?|"
    r"leans? on|leaning on|lands? on|landing on|weight|hits?|hitting|highlight\w*|underlin\w*)\b"
)

# --- speaker traits --------------------------------------------------------------
GENDER_WORDS: dict[str, str] = {
    "male": "Male", "man": "Male", "men": "Male", "gentleman": "Male", "boy": "Male", "masculine": "Male",
    "he": "Male", "him": "Male", "his": "Male", "himself": "Male",
    "female": "Female", "woman": "Female", "women": "Female", "lady": "Female", "girl": "Female",
    "feminine": "Female", "she": "Female", "her": "Female", "hers": "Female", "herself": "Female",
}
GENDER_SWAP: dict[str, str] = {
    "male": "female", "female": "male", "man": "woman", "woman": "man", "men": "women", "women": "men",
    "gentleman": "lady", "lady": "gentleman", "boy": "girl", "girl": "boy", "masculine": "feminine",
    "feminine": "masculine", "he": "she", "she": "he", "him": "her", "his": "her", "himself": "herself",
    "herself": "himself", "hers": "his",
}
# Multi-word phrases first (matched before single words).
AGE_PHRASES: list[tuple[str, str]] = [
    (r"young[- ]adults?", "Young Adult"),
    (r"young (?:man|woman|men|women)", "Young Adult"),
    (r"in (?:his|her|their) (?:twenties|early thirties)", "Young Adult"),
    (r"middle[- ]aged", "Middle-aged"),
    (r"elderly", "Elderly"),
    (r"old(?:er)? (?:man|woman|speaker|person|adult)", "Elderly"),
    (r"seniors?", "Elderly"),
    (r"teen(?:age|aged|ager|agers)?", "Teenager"),
    (r"adolescents?", "Teenager"),
    (r"child(?:ren)?", "Child"),
    (r"(?:little|young) (?:boy|girl)", "Child"),
    (r"boy|girl", "Child"),
]
AGE_ADJ: dict[str, str] = {"Teenager": "teenage", "Young Adult": "young adult", "Middle-aged": "middle-aged",
                           "Elderly": "elderly"}

# --- emotions -------------------------------------------------------------------
# Words that name the label itself; these may appear only in the conclusion.
LABEL_FORMS: dict[str, list[str]] = {
    "neutral": ["neutral", "neutrality"],
    "happy": ["happy", "happiness"],
    "sad": ["sad", "sadness"],
    "angry": ["angry", "anger", "angrily"],
    "contempt or disgust": ["contempt", "disgust", "disgusted", "contemptuous"],
    "confused": ["confused", "confusion"],
    "whisper": ["whisper", "whispered", "whispering"],
    "surprise": ["surprise", "surprised"],
    "fear": ["fear", "fearful", "afraid"],
}
# Words that tie a cue to an emotion without naming the label (the composer's hints).
EMOTION_HINTS: dict[str, list[str]] = {
    "neutral": ["composure", "calm", "evenness", "detachment", "restraint", "equanimity"],
    "happy": ["cheerfulness", "delight", "joy", "warmth", "elation", "glee", "enthusiasm", "amusement"],
    "sad": ["sorrow", "dejection", "melancholy", "gloom", "grief", "heaviness", "despondency"],
    "angry": ["irritation", "agitation", "hostility", "annoyance", "fury", "indignation", "exasperation"],
    "contempt or disgust": ["disdain", "scorn", "distaste", "revulsion", "derision", "aversion"],
    "confused": ["puzzlement", "bewilderment", "perplexity", "doubt", "hesitancy"],
    "whisper": ["secrecy", "discretion", "confidentiality", "intimacy", "breathiness"],
    "surprise": ["astonishment", "amazement", "disbelief", "startlement", "shock"],
    "fear": ["anxiety", "alarm", "nervousness", "dread", "panic", "apprehension", "unease"],
}
EMOTION_FAMILY: dict[str, list[str]] = {lab: LABEL_FORMS[lab] + EMOTION_HINTS[lab] for lab in LABELS}
# Cue values that typically accompany each label; the composer interprets a matching cue as support.
TYPICAL_CUES: dict[str, dict[str, set[str]]] = {
    "angry": {"pitch_level": {"high"}, "energy_level": {"high"}, "speed_level": {"fast", "normal"},
              "intonation": {"falling", "expressive", "rising-falling"}},
    "happy": {"pitch_level": {"high"}, "energy_level": {"high", "normal"}, "speed_level": {"fast", "normal"},
              "intonation": {"rising", "expressive", "rising-falling"}},
    "sad": {"pitch_level": {"low"}, "energy_level": {"low"}, "speed_level": {"slow"}, "intonation": {"falling", "flat"}},
    "fear": {"pitch_level": {"high"}, "energy_level": {"low", "high"}, "speed_level": {"fast"},
             "intonation": {"rising", "expressive", "falling-rising"}},
    "surprise": {"pitch_level": {"high"}, "energy_level": {"high"}, "speed_level": {"fast", "normal"},
                 "intonation": {"rising", "rising-falling", "expressive"}},
    "contempt or disgust": {"pitch_level": {"low", "normal"}, "energy_level": {"normal", "low"},
                            "speed_level": {"slow", "normal"}, "intonation": {"falling", "falling-rising", "flat"}},
    "confused": {"pitch_level": {"normal", "high"}, "energy_level": {"normal", "low"}, "speed_level": {"slow", "normal"},
                 "intonation": {"rising", "falling-rising"}},
    "whisper": {"pitch_level": {"low", "normal"}, "energy_level": {"low"}, "speed_level": {"slow", "normal"},
                "intonation": {"flat", "falling"}},
    "neutral": {"pitch_level": {"normal"}, "energy_level": {"normal"}, "speed_level": {"normal"},
                "intonation": {"flat", "falling"}},
}
# Labels whose arousal makes stressed words a supporting cue.
STRESS_SUPPORTS: frozenset[str] = frozenset({"angry", "happy", "surprise", "fear", "contempt or disgust"})
LABEL_NOUN: dict[str, str] = {
    "neutral": "a neutral state", "happy": "happiness", "sad": "sadness", "angry": "anger",
    "contempt or disgust": "contempt or disgust", "confused": "confusion", "whisper": "a whisper",
    "surprise": "surprise", "fear": "fear",
}
LABEL_PREDICATE: dict[str, str] = {
    "neutral": "sounds neutral", "happy": "sounds happy", "sad": "sounds sad", "angry": "sounds angry",
    "contempt or disgust": "sounds contemptuous or disgusted", "confused": "sounds confused",
    "whisper": "is whispering", "surprise": "sounds surprised", "fear": "sounds fearful",
}
# Attribute nouns the composer names in a conclusion without restating levels.
CUE_NOUNS: dict[str, list[str]] = {
    "pitch_level": ["pitch"], "energy_level": ["energy", "loudness"], "speed_level": ["pace", "tempo"],
    "intonation": ["intonation", "contour"], "stressed_words": ["emphasis", "word stress"],
}


def all_claim_words() -> set[str]:
    """Every single word that can carry a claim (for protecting them from edits)."""
    words: set[str] = set(STANDALONE_LEVEL_WORDS) | set(GENDER_WORDS)
    for levels in LEVEL_WORDS.values():
        for ws in levels.values():
            words.update(ws)
    for ws in ANCHORS.values():
        words.update(ws)
    for ws in INTONATION_WORDS.values():
        words.update(ws)
    words.update(INTONATION_ANCHORS)
    return words


def emotion_words() -> set[str]:
    return {w for ws in EMOTION_FAMILY.values() for w in ws}
