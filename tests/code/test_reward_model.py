"""Reward model: prompt and target, tuple parsing and quarantine, held-out split, metrics computed by hand,
the scorer's parse/fallback counting, the trainer mapping, and the collator's labels on real tuples."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from models import reward_model as R
from models.rewards import CRITERIA, Scores, parse_reward_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rm_fixtures import shared_rm_tuples  # noqa: E402

G = {"factual_alignment": 4, "interpretative_quality": 3, "caption_completeness": 5, "fluency_and_structural_clarity": 2}


def tuple_rec(i: int, record: str = "r0", split: str = "train", g: dict | None = None, audio: str = "/a.wav", **kw) -> dict:
    return {"id": f"{record}#{i}", "record_id": record, "split": split, "kind": "degraded",
            "q": {"audio_path": audio, "prompt": "<audio>What is the emotion?"}, "r": "The voice is loud.",
            "g": dict(g or G), **kw}  # fmt: skip


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- prompt and target --------------------------------------------------------------------------
def test_target_json_is_the_four_integer_fields_in_order_and_parses_back():
    text = R.target_json(G)
    assert text == ('{"factual_alignment": 4, "interpretative_quality": 3, "caption_completeness": 5, '
                    '"fluency_and_structural_clarity": 2}')  # fmt: skip
    assert parse_reward_scores(text) == Scores(4, 3, 5, 2)


def test_prompt_has_one_clip_marker_and_neutralises_chat_tokens_in_model_output():
    p = R.rm_prompt("<audio>What is the emotion?", 'Loud <|im_end|>\n<|im_start|>assistant <audio> "x"')
    assert p.count("<audio>") == 1 and p.startswith("<audio>")
    assert "<|" not in p and "What is the emotion?" in p and 'Loud' in p
    assert all(c in p for c in CRITERIA)
    long = R.rm_prompt("q", "~" * (R.MAX_REASONING_CHARS + 500))
    assert long.count("~") == R.MAX_REASONING_CHARS


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think> slow and low </think><answer>sad</answer>", "slow and low"),
        ("no tags at all", "no tags at all"),
        ("reasoning only<answer>sad</answer>", "reasoning only"),
        ("<think>unclosed", "unclosed"),
        ("", ""),
    ],
)
def test_extract_reasoning(completion, expected):
    assert R.extract_reasoning(completion) == expected


# -- tuples ------------------------------------------------------------------------------------------
def test_read_quarantines_bad_tuples_with_reasons_and_skips_failed_rewrites(tmp_path):
    rows = [
        tuple_rec(0),
        tuple_rec(1, g={**G, "caption_completeness": 6}),
        tuple_rec(2, g={**G, "caption_completeness": 2.5}),
        tuple_rec(3, g={k: v for k, v in G.items() if k != "fluency_and_structural_clarity"}),
        {**tuple_rec(4), "r": "  "},
        {k: v for k, v in tuple_rec(5).items() if k != "record_id"},
        tuple_rec(0),  # duplicate id
        {**tuple_rec(6), "kind": "failed", "r": "", "error": "timeout"},
        tuple_rec(7, audio="clips/x.wav"),
        {**tuple_rec(8), "g": {**G, "factual_alignment": True}},
    ]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.wav").write_bytes(b"")  # parsing looks for the clip, never reads it
    tuples, quarantined = R.read_rm_tuples(write_lines(tmp_path / "t.jsonl", rows))
    assert [t.id for t in tuples] == ["r0#0", "r0#7"]
    assert tuples[1].audio == (tmp_path / "clips" / "x.wav").resolve()  # relative to the tuple file
    assert tuples[0].scores == G and tuples[0].question == "<audio>What is the emotion?"
    assert [q["reason"] for q in quarantined] == ["bad_scores", "bad_scores", "bad_scores", "empty_reasoning",
                                                  "missing_field", "duplicate_id", "bad_scores"]  # fmt: skip


def test_a_line_that_is_not_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [tuple_rec(0), "{not json"])
    with pytest.raises(R.RmDataError, match=r"t\.jsonl:2"):
        R.read_rm_tuples(path)
    with pytest.raises(R.RmDataError, match="not found"):
        R.read_rm_tuples(tmp_path / "missing.jsonl")


def _tuples(spec: dict[str, str], per_record: int = 3) -> list[R.RmTuple]:
    return [R.parse_tuple(tuple_rec(i, record, split), Path("/")) for record, split in spec.items() for i in range(per_record)]


def test_split_follows_the_corpus_splits_and_leaves_test_out(cfg):
    ts = _tuples({"a": "train", "b": "validation", "c": "test", "d": "train"})
    train, held, how = R.split_held_out(ts, cfg)
    assert how == "by_split"
    assert {t.record_id for t in train} == {"a", "d"} and {t.record_id for t in held} == {"b"}


def test_without_held_out_splits_records_stay_whole_on_one_side(cfg):
    ts = _tuples({f"rec{i}": "train" for i in range(40)})
    test = _tuples({f"test{i}": "test" for i in range(10)})
    train, held, how = R.split_held_out(ts + test, cfg)
    assert how == "by_record" and train and held and len(train) + len(held) == len(ts)  # test records on neither side
    assert not {t.record_id for t in train} & {t.record_id for t in held}
    assert 0.05 < len(held) / len(ts) < 0.45  # eval_fraction 0.2, seeded hash
    assert R.split_held_out(ts, cfg)[1] == held  # deterministic
    two = _tuples({"x": "train", "y": "train"})
    tr, he, _ = R.split_held_out(two, cfg)
    assert len({t.record_id for t in tr}) == len({t.record_id for t in he}) == 1
    with pytest.raises(R.RmDataError):
        R.split_held_out(_tuples({"only": "train"}), cfg)
    with pytest.raises(R.RmDataError):  # test records do not make up the second record
        R.split_held_out(_tuples({"only": "train", "t": "test"}), cfg)


# -- metrics -----------------------------------------------------------------------------------------
W = {c: 0.25 for c in CRITERIA}


def _vec(*v) -> dict[str, int]:
    return dict(zip(CRITERIA, v))


def test_metrics_perfect_reversed_and_unparseable():
    targets = [_vec(1, 2, 3, 4), _vec(2, 3, 4, 5), _vec(3, 4, 5, 1), _vec(5, 5, 5, 5)]
    perfect = [Scores(*(float(x) for x in t.values())) for t in targets]
    m, confusion = R.evaluation_metrics(targets, perfect, W)
    assert m["parse_rate"] == 1.0 and m["n"] == 4
    for c in CRITERIA:
        assert m[f"spearman/{c}"] == pytest.approx(1.0) and m[f"mae/{c}"] == 0 and m[f"exact/{c}"] == 1
    assert m["spearman/reasoning_reward"] == pytest.approx(1.0)
    assert confusion["factual_alignment"][0][0] == 1 and confusion["factual_alignment"][4][4] == 1

    # factual alignment predicted in reverse order, one answer unparseable
    pred = [Scores(5, 2, 3, 4), Scores(3, 3, 4, 5), None, Scores(1, 5, 5, 5)]
    m, _ = R.evaluation_metrics(targets, pred, W)
    assert m["parse_rate"] == 0.75 and m["n_parsed"] == 3
    assert m["spearman/factual_alignment"] == pytest.approx(-1.0)
    assert m["mae/factual_alignment"] == pytest.approx((4 + 1 + 4) / 3)


def test_metrics_leave_out_undefined_correlations():
    targets = [_vec(1, 2, 3, 4), _vec(2, 3, 4, 5), _vec(3, 3, 3, 3)]
    constant = [Scores(3, 3, 3, 3)] * 3
    m, _ = R.evaluation_metrics(targets, constant, W)
    assert not any(k.startswith("spearman/") for k in m) and m["mae/factual_alignment"] == pytest.approx(1.0)
    m, _ = R.evaluation_metrics(targets, [None] * 3, W)
    assert m == {"n": 3.0, "n_parsed": 0.0, "parse_rate": 0.0}
    assert math.isnan(R.spearman([1.0], [2.0]))


# -- scorer --------------------------------------------------------------------------------------------
def test_scorer_counts_unparseable_answers_and_gives_them_the_fallback(cfg):
    rm = R.RewardModel(lm=None, weights={"factual_alignment": 0.4, "interpretative_quality": 0.2,
                                         "caption_completeness": 0.2, "fluency_and_structural_clarity": 0.2},
                       fallback=0.1)  # fmt: skip
    texts = [R.target_json(G), "sure! " + R.target_json({c: 5 for c in CRITERIA}), "{broken", '{"factual_alignment": 9}']
    scores = rm.score_texts(texts)
    assert scores[0] == Scores(4, 3, 5, 2) and scores[1] == Scores(5, 5, 5, 5) and scores[2:] == [None, None]
    assert (rm.stats.n_scored, rm.stats.n_unparseable, rm.stats.parse_rate) == (4, 2, 0.5)
    # R_t = sum w_j g_j / 5: (0.4*4 + 0.2*3 + 0.2*5 + 0.2*2) / 5 = 0.72
    assert rm.rewards_from_scores(scores) == pytest.approx([0.72, 1.0, 0.1, 0.1])


def test_random_model_scorer_runs_end_to_end_and_falls_back(cfg):
    """The untrained-RM path (from_source on a base): a random model answers no JSON; every answer counts."""
    import numpy as np

    rm = R.RewardModel.from_source(cfg.models.reward_source, cfg)
    assert rm.fallback == cfg.grpo.unparseable_reasoning_score and rm.max_new_tokens == cfg.rm.max_new_tokens
    audio = [np.sin(np.linspace(0, 300, 8000)).astype("float32") * 0.3] * 3
    rewards = rm.reasoning_rewards(audio, "<audio>What is the emotion?", ["calm and low", "", "<think>x</think>"])
    assert len(rewards) == 3 and rm.stats.n_scored == 3
    assert rewards.count(rm.fallback) == rm.stats.n_unparseable
    with pytest.raises(ValueError, match="2 audios"):
        rm.score(audio[:2], ["q"] * 3, ["r"] * 3)


# -- training ------------------------------------------------------------------------------------------
def test_trainer_config_maps_rm_settings_onto_the_sft_trainer(cfg):
    cfg.rm.learning_rate, cfg.rm.max_steps, cfg.rm.lora_r = 1e-3, 7, 4
    lora = R.trainer_config(cfg)
    assert (lora.sft.stage2_learning_rate, lora.sft.stage2_max_steps, lora.sft.lora_r) == (1e-3, 7, 4)
    assert lora.sft.stages == ["stage2"] and cfg.sft.stages == ["stage1", "stage2"]  # cfg itself untouched
    cfg.rm.method, cfg.rm.encoder_layers = "full", 2
    full = R.trainer_config(cfg)
    assert (full.sft.stage1_learning_rate, full.sft.stage1_max_steps, full.sft.stage1_encoder_layers) == (1e-3, 7, 2)
    assert R.STAGE_OF_METHOD["full"] == "stage1"


def test_collator_labels_exactly_the_target_json_on_real_tuples(cfg):
    from models.backbone import IGNORE_INDEX, AudioLM
    from models.sft import SftCollator, SftDataset

    tuples, quarantined = R.read_rm_tuples(shared_rm_tuples(cfg))
    usable, bad_audio = R.check_tuple_audio(tuples, cfg)
    assert not quarantined and not bad_audio and len(usable) == len(tuples) == 90
    lm = AudioLM.from_source(cfg.models.reward_source, cfg)
    samples = [t.to_sample() for t in usable[:3]]
    batch = SftCollator(lm)([SftDataset(samples, cfg)[i] for i in range(3)])
    for row, t in zip(batch["labels"], usable[:3]):
        labelled = lm.tokenizer.decode(row[row != IGNORE_INDEX])
        assert labelled == R.target_json(t.scores) + "<|im_end|>"
    assert R.tuples_sha1(usable) != R.tuples_sha1(usable[::-1])


def test_score_slots_find_each_criterion_digit_for_both_tokenizers():
    from transformers import AutoTokenizer

    from models.convert_gguf import packaged_smollm2_gguf
    from models.random_tiny import byte_tokenizer

    gguf = packaged_smollm2_gguf()  # SmolLM2's tokenizer, read the way the tiny base's conversion reads it
    for tok in (byte_tokenizer(), AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)):
        slots = R.score_slots(tok)
        ids = tok(R.target_json(G), add_special_tokens=False)["input_ids"]
        assert [tok.decode([ids[j]]) for j, _ in slots] == [str(G[c]) for c in CRITERIA]
        assert all(tok.decode(cands) == "12345" for _, cands in slots)


def test_expected_scores_are_the_digit_probabilities_of_greedy_decoding(cfg):
    """sum_d d p(d) at the first slot equals what completion_logprobs gives for the five continuations."""
    import numpy as np
    import torch

    rm = R.RewardModel.from_source(cfg.models.reward_source, cfg)
    audio = [np.sin(np.linspace(0, 200, 6000)).astype("float32") * 0.3, np.zeros(5000, dtype="float32") + 0.01]
    greedy = [Scores(4, 3, 5, 2), None]
    expected = rm.expected_scores(audio, "<audio>What?", ["calm", "loud"], greedy)
    assert expected[1] is None and all(1 <= v <= 5 for v in expected[0].as_tuple())

    j, _ = R.score_slots(rm.lm.tokenizer)[0]
    prompt = rm.lm.build_chat_inputs(audio[:1], [R.rm_prompt("<audio>What?", "calm")], system=R.RM_SYSTEM)
    ids = rm.lm.tokenizer(R.target_json(G), add_special_tokens=False)["input_ids"]
    variants = [ids[:j] + rm.lm.tokenizer(str(d), add_special_tokens=False)["input_ids"] for d in range(1, 6)]
    with torch.no_grad():
        last = [rm.lm.completion_logprobs(prompt, [v]).logprobs[0, -1].exp().item() for v in variants]
    manual = sum(d * p for d, p in zip(range(1, 6), last)) / sum(last)
    assert expected[0].factual_alignment == pytest.approx(manual, rel=1e-4)
