"""SFT sample files for tests: the demo corpus (espeak-ng, real audio, ~3 s on the test profile) turned into
samples of the sample-file format of emotionthinker/sft_data (attribute, ASR and CoT questions).

The answers come from the demo corpus's design levels and labels, so they are true of the audio.
"""

from __future__ import annotations

import json
from pathlib import Path

from emotionthinker.democorpus import synthesize_demo_corpus
from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from emotionthinker.records import read_jsonl

PROSODY_SYSTEM = "You are a helpful assistant."
ATTRIBUTE_QUESTION = {
    "pitch": "<audio>What is the pitch level of this speech? Answer with one of: low, normal, high.",
    "speed": "<audio>What is the speaking rate of this speech? Answer with one of: slow, normal, fast.",
    "energy": "<audio>What is the energy level of this speech? Answer with one of: low, normal, high.",
}


def cot_target(rec: dict) -> str:
    return (
        f"<think>The voice is {rec['design_pitch_level'] or 'unvoiced'} in pitch, {rec['design_speed_level']} in pace and "
        f"{rec['design_energy_level']} in energy while saying \"{rec['transcription']}\".</think>"
        f"<answer>{rec['emotion']}</answer>"
    )


def samples_for(rec: dict, root: Path) -> tuple[list[dict], list[dict]]:
    """(stage-I samples, stage-II samples) of one demo clip."""
    audio = [str(root / rec["audio_path"])]
    rid = Path(rec["audio_path"]).stem
    meta = {"corpus": "demo", "speaker": rec["speaker"], "emotion": rec["emotion"], "split": rec["split"]}
    stage1 = [
        {"id": f"attr-{a}-{rid}", "task": "attribute", "audio": audio, "system": PROSODY_SYSTEM, "prompt": q,
         "target": rec[f"design_{a}_level"], "source_id": rid, "meta": {**meta, "attribute": a}}
        for a, q in ATTRIBUTE_QUESTION.items()
        if rec.get(f"design_{a}_level")  # whispers have no pitch level
    ]  # fmt: skip
    stage1.append({"id": f"asr-{rid}", "task": "asr", "audio": audio, "system": PROSODY_SYSTEM,
                   "prompt": "<audio>Transcribe the speech.", "target": rec["transcription"], "source_id": rid,
                   "meta": meta})  # fmt: skip
    cot = {"id": f"cot-{rid}", "task": "cot", "audio": audio, "system": SYSTEM_PROMPT, "prompt": USER_PROMPT,
           "target": cot_target(rec), "source_id": rid, "meta": meta}  # fmt: skip
    return stage1 + [cot], [cot]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_sft_dir(out: Path, cfg) -> Path:
    """<out>/sft with stage{1,2}.{train,validation}.jsonl over a freshly synthesised demo corpus."""
    demo = out / "demo"
    metadata = synthesize_demo_corpus(demo, cfg)
    data = out / "sft"
    data.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict]] = {f"stage{s}.{split}": [] for s in (1, 2) for split in ("train", "validation")}
    for rec in read_jsonl(metadata):
        split = "train" if rec["split"] == "train" else "validation"
        s1, s2 = samples_for(rec, metadata.parent)
        files[f"stage1.{split}"] += s1
        files[f"stage2.{split}"] += s2
    for name, rows in files.items():
        write_jsonl(data / f"{name}.jsonl", rows)
    return data


_SHARED: dict[str, Path] = {}


def shared_sft_dir(cfg) -> Path:
    """make_sft_dir once per test process (the test profile's demo corpus is the same for every cfg).

    Tests must not modify it; copy it first (shutil.copytree) when a test needs to change files.
    """
    import atexit
    import shutil
    import tempfile

    if "dir" not in _SHARED:
        root = Path(tempfile.mkdtemp(prefix="et-sft-samples-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED["dir"] = make_sft_dir(root, cfg)
    return _SHARED["dir"]
