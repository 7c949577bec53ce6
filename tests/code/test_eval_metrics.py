"""Evaluation metrics, output rows, data selection, the factual judge and the tables, against numbers
computed by hand."""

from __future__ import annotations

import json

import pytest

from emotionthinker.evaluation.data import EvalDataError, select_eval_data
from emotionthinker.evaluation.identity import variant_for, variant_from_flags
from emotionthinker.evaluation.judges import JudgeResult, factual_scores, reasoning_of
from emotionthinker.evaluation.metrics import NO_ANSWER, MetricsError, classification_metrics, confusion_figure
from emotionthinker.evaluation.predict import output_row, read_outputs_table, write_outputs_table
from emotionthinker.evaluation.tables import EvalRun, markdown_table, table2_rows, table4_rows

GOLD = ["angry", "angry", "angry", "sad", "sad", "neutral"]
PRED = ["angry", "sad", None, "sad", "sad", "angry"]
FORMAT = [True, True, False, True, False, True]


def test_hand_computed_metrics():
    m = classification_metrics(GOLD, PRED, FORMAT)
    # recall: angry 1/3, sad 2/2, neutral 0/1
    assert m.uar == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m.weighted_accuracy == pytest.approx(3 / 6)
    # precision: angry 1/2 (rows 0, 5), sad 2/3 (rows 1, 3, 4), neutral never predicted -> 0
    # F1: angry 2*(1/2)(1/3)/(5/6) = 0.4, sad 2*(2/3)*1/(5/3) = 0.8, neutral 0
    assert m.per_class["angry"]["f1"] == pytest.approx(0.4)
    assert m.per_class["sad"]["f1"] == pytest.approx(0.8)
    assert m.per_class["neutral"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0, "support": 1.0}
    assert m.macro_f1 == pytest.approx(0.4)
    assert m.extra == {"answer_rate": pytest.approx(5 / 6), "format_rate": pytest.approx(4 / 6)}
    cm = m.confusion
    assert cm.rows == ["neutral", "sad", "angry"]  # gold classes present, in LABELS order
    assert cm.columns == ["neutral", "sad", "angry", NO_ANSWER]
    assert cm.counts == [[0, 0, 1, 0], [0, 2, 0, 0], [0, 1, 1, 1]]
    flat = m.scalars()
    assert flat["recall/angry"] == pytest.approx(1 / 3) and flat["n"] == 6


def test_classes_absent_from_gold_cost_recall_but_add_no_average_term():
    m = classification_metrics(["happy", "happy", "sad", "sad"], ["fear", "happy", "sad", "sad"])
    assert set(m.per_class) == {"happy", "sad"}
    assert m.uar == pytest.approx((0.5 + 1.0) / 2)
    assert m.confusion.columns == ["happy", "sad", "fear"]  # no NO_ANSWER column: every output answered
    assert m.weighted_accuracy == pytest.approx(0.75) and "format_rate" not in m.extra


def test_perfect_and_all_wrong():
    assert classification_metrics(GOLD, GOLD).uar == 1.0
    wrong = classification_metrics(GOLD, [None] * len(GOLD))
    assert wrong.uar == wrong.weighted_accuracy == wrong.macro_f1 == wrong.extra["answer_rate"] == 0.0


@pytest.mark.parametrize(
    "gold, pred, match",
    [([], [], "no clips"), (["angry"], [], "1 gold labels, 0 predictions"), (["anger"], ["angry"], "outside the label space"),
     (["angry"], ["Angry"], "normalise answers first")],
)
def test_bad_inputs_raise(gold, pred, match):
    with pytest.raises(MetricsError, match=match):
        classification_metrics(gold, pred)


def test_confusion_figure_renders_png(tmp_path):
    fig = confusion_figure(classification_metrics(GOLD, PRED).confusion, "t")
    path = tmp_path / "cm.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_row_parses_answer_and_format():
    rec = {"id": "a", "audio_path": "/x.wav", "corpus": "c", "speaker": "s", "emotion": "contempt or disgust"}
    ok = output_row(rec, "<think>Low, slow, sneering.</think><answer>Disgust</answer>", 9)
    assert (ok["answer"], ok["predicted"], ok["format_ok"], ok["correct"]) == ("Disgust", "contempt or disgust", True, True)
    loose = output_row(rec, "I think <answer>angry</answer> maybe", 5)
    assert (loose["predicted"], loose["answer_source"], loose["format_ok"], loose["correct"]) == ("angry", "tag", False, False)
    two = output_row(rec, "<think>x</think><answer>sad</answer><answer>angry</answer>", 5)
    assert two["answer"] is None and two["predicted"] is None and two["answer_source"] == "none"
    # No answer block: the one label the free text names (a baseline that was never taught the tags).
    free = output_row(rec, "The speaker sounds disgusted by the door.", 7)
    assert (free["predicted"], free["answer_source"], free["predicted_strict"], free["correct"]) == (
        "contempt or disgust", "text", None, True)
    assert output_row(rec, "Angry, or maybe sad.", 4)["predicted"] is None  # two labels named: no answer
    assert output_row(rec, "<answer>furious</answer>", 4)["answer_source"] == "none"  # a tagged non-label is final


def test_outputs_table_roundtrip_gives_same_metrics(tmp_path):
    recs = [{"id": str(i), "audio_path": f"/{i}.wav", "emotion": g} for i, g in enumerate(GOLD)]
    texts = ["<think>r</think><answer>angry</answer>", "angry", "<answer>x</answer>", "<think>r</think><answer>sad</answer>",
             "<answer>sad</answer>", "<think>r</think><answer>anger</answer>"]  # fmt: skip
    rows = [output_row(r, t, 3) for r, t in zip(recs, texts)]
    paths = write_outputs_table(rows, tmp_path)
    from emotionthinker.evaluation.metrics import metrics_from_rows

    direct = metrics_from_rows(rows).scalars()
    for path in paths.values():
        back = read_outputs_table(path)
        assert metrics_from_rows(back).scalars() == direct
    # predictions: angry, angry (free text), None ("x" in the tags), sad, sad, angry ("anger"): recalls 2/3, 1, 0
    assert direct["uar"] == pytest.approx((2 / 3 + 1 + 0) / 3) and direct["answer_rate"] == pytest.approx(5 / 6)
    # tag-only: the free-text answer of row 1 does not count -> angry 1/3, sad 1 (rows 3, 4), neutral 0
    assert direct["uar_strict"] == pytest.approx((1 / 3 + 1 + 0) / 3) and direct["text_answer_rate"] == pytest.approx(1 / 6)


def test_select_eval_data_protocol_and_version(tmp_path):
    manifest = tmp_path / "emodb.jsonl"
    rows = [{"id": f"r{i}", "audio_path": f"/a/{i}.wav", "corpus": "emodb", "split": "test" if i % 2 else "train",
             "speaker": "s", "emotion": "angry"} for i in range(6)]  # fmt: skip
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = select_eval_data(manifest, "emodb")  # EmoDB protocol: its test split
    assert bench.benchmark == "emodb" and [r["id"] for r in bench.records] == ["r1", "r3", "r5"]
    everything = select_eval_data(manifest, "emodb", split="all")
    assert len(everything.records) == 6 and everything.eval_data_version != bench.eval_data_version
    assert select_eval_data(manifest, None).benchmark == "emodb"  # named after its one corpus
    assert select_eval_data(manifest, "EmoDB").eval_data_version == bench.eval_data_version  # deterministic
    assert "eval_manifest_sha1" in bench.data_version
    with pytest.raises(EvalDataError, match="unknown benchmark"):
        select_eval_data(manifest, "nope")
    with pytest.raises(EvalDataError, match="no records in split"):
        select_eval_data(manifest, "emodb", split="validation")


ANN = {"pitch_level": "high", "energy_level": "low", "speed_level": "fast", "intonation": "rising",
       "stressed_words": ["door"], "gender": "Female", "age_level": "unknown"}  # fmt: skip
TRANSCRIPT = "Kids are talking by the door."


def test_factual_judge_mapping_by_hand():
    text = ('<think>The woman speaks with a high pitch and quickly, saying "Kids are talking by the door." '
            "Her voice is loud, and she sounds elderly.</think><answer>angry</answer>")  # fmt: skip
    scores, ev = factual_scores(reasoning_of(text), ANN, TRANSCRIPT)
    # supported: gender, pitch, speed, transcript; contradicted: energy (loud vs low); age unverifiable
    assert ev["supported"] == ["gender", "pitch_level", "speed_level", "transcript"]
    assert ev["contradicted"] == ["energy_level"] and ev["unverifiable"] == ["age_level"]
    assert scores["factual_alignment"] == pytest.approx(1 + 4 * 4 / 5)
    # determinable: 7 attributes (age unknown); mentioned among them: 5
    assert scores["caption_completeness"] == pytest.approx(1 + 4 * 5 / 7)


def test_factual_judge_without_claims_scores_lowest():
    for text in ("", "<answer>sad</answer>", "It is hard to tell what is going on."):
        scores, ev = factual_scores(reasoning_of(text), ANN, TRANSCRIPT)
        assert scores == {"factual_alignment": 1.0, "caption_completeness": 1.0} and ev["n_claims"] == 0


def test_judge_result_means_and_metrics():
    res = JudgeResult("factual", [{"factual_alignment": 5.0, "caption_completeness": 3.0}, None,
                                  {"factual_alignment": 3.0, "caption_completeness": 1.0}])  # fmt: skip
    res.failures["no_annotations"] += 1
    assert res.means() == {"factual_alignment": 4.0, "caption_completeness": 2.0, "mean": 3.0}
    m = res.metrics()
    assert m["judge/factual/n_scored"] == 2 and m["judge/factual/failures"] == 1


def test_variants_from_flags_and_names():
    assert variant_from_flags({"grpo.plain_grpo": "True", "grpo.untrained_rm": "True"}) == "grpo"
    assert variant_from_flags({"grpo.plain_grpo": "False", "grpo.no_trust_weight": "true"}) == "ptr_no_trust"
    assert variant_from_flags({"plain_grpo": False, "untrained_rm": False, "no_trust_weight": False, "no_progressive": False}) == "grpo_ptr"
    assert variant_from_flags({"lr": "1"}) is None
    assert variant_for("emotionthinker-base", {"stages": '["stage1", "stage2"]'}) == "sft"
    assert variant_for("emotionthinker-base", {"stages": '["stage1"]'}) == "base"
    assert variant_for("emotionthinker-policy", {"grpo.no_progressive": "True"}) == "ptr_no_progressive"


def _run(label, bench, uar, variant="", judge=None, t=0):
    metrics = {"uar": uar} | ({f"judge/{judge}/{c}": v for c, v in (("factual_alignment", 4.0), ("caption_completeness", 2.0))}
                             if judge else {})  # fmt: skip
    return EvalRun(f"id-{label}-{bench}", label, "registry", variant, bench, "tiny", t, metrics)


def test_table2_layout_ours_beside_paper():
    runs = [_run("m v1", "ravdess", 0.5, judge="factual"), _run("m v1", "savee", 0.25), _run("m v1", "emodb", 0.75)]
    header, rows = table2_rows(runs, ["llm", "rm", "factual"])
    assert header[:7] == ["Model", "Source", "IEMOCAP", "MELD", "RAVDESS", "SAVEE", "Avg"] and header[7] == "EmoDB"
    ours = rows[0]
    assert ours[:8] == ["m v1", "this project (tiny)", "–", "–", "50.00", "25.00", "37.50 (2/4)", "75.00"]
    assert ours[8:] == ["factual", "4.00", "–", "2.00", "–", "3.00"]
    paper = {r[0]: r for r in rows[1:]}
    assert paper["EmotionThinker"][2:7] == ["77.68", "59.71", "71.56", "73.96", "68.89"]
    assert paper["EmotionThinker"][-5:] == ["3.54", "4.01", "3.96", "4.42", "3.98"] and len(paper) == 10
    md = markdown_table(header, rows)
    assert md.count("\n") == len(rows) + 1 and "| m v1 |" in md


def test_table4_rows_by_variant():
    runs = [_run("b v1", "ravdess", 0.3, "sft", "factual", 1), _run("b v1", "emodb", 0.5, "sft", None, 1),
            _run("p v2", "ravdess", 0.6, "grpo_ptr", None, 2)]  # fmt: skip
    header, rows = table4_rows(runs, ["factual"])
    by = {r[0]: r for r in rows}
    assert by["sft"] == ["sft", "+SFT", "53.91", "3.78", "b v1", "emodb, ravdess", "40.00", "factual", "3.00"]
    assert by["grpo_ptr"][4:7] == ["p v2", "ravdess", "60.00"] and by["grpo"][4] == "–"
    assert [r[0] for r in rows] == ["backbone", "base", "sft", "grpo", "ptr_untrained_rm", "ptr_no_trust",
                                    "ptr_no_progressive", "grpo_ptr"]  # fmt: skip
