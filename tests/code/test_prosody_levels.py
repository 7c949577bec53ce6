"""Calibration: tertiles per corpus (pitch per corpus x gender), fallbacks, JSON artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotionthinker.prosody.levels import (
    Calibration, CalibrationError, assign_levels, fit_calibration, fit_calibration_from_records, load_reference_calibration,
)  # fmt: skip


def _m(st: float, db: float, rate: float) -> dict[str, float]:
    return {"f0_median_st": st, "rms_dbfs": db, "articulation_rate_sps": rate}


def _corpus(name: str, gender: str, n: int, st0: float, db0: float, rate0: float) -> list[tuple[str, str, dict]]:
    # values st0 + 0..n-1 etc.: tertiles are known in closed form
    return [(name, gender, _m(st0 + i, db0 + i, rate0 + 0.1 * i)) for i in range(n)]


def test_tertiles_per_group_and_levels(cfg):
    p = cfg.prosody.model_copy(update={"min_group_size": 30})
    items = _corpus("a", "female", 30, 10.0, -40.0, 3.0) + _corpus("a", "male", 30, 0.0, -40.0, 3.0)
    cal = fit_calibration(items, p)
    f = cal.groups["pitch"]["a/female"]
    assert f.n == 30
    assert f.low_below == pytest.approx(np.quantile(np.arange(30) + 10.0, 1 / 3))
    assert f.high_above == pytest.approx(np.quantile(np.arange(30) + 10.0, 2 / 3))
    # energy/speed pool both genders of the corpus
    assert cal.groups["energy"]["a"].n == 60
    # 15 st is mid-range among the males (0..29 st) but low among the females (10..39 st)
    levels, used = assign_levels(_m(15.0, -20.0, 2.0), "a", "male", cal)
    assert levels == {"pitch_level": "normal", "energy_level": "high", "speed_level": "slow"}
    assert used == {"pitch": "a/male", "energy": "a", "speed": "a"}
    levels, used = assign_levels(_m(15.0, -40.0, 4.0), "a", "female", cal)
    assert levels == {"pitch_level": "low", "energy_level": "low", "speed_level": "normal"}
    assert used["pitch"] == "a/female"


def test_each_tertile_holds_a_third(cfg):
    rng = np.random.default_rng(0)
    items = [("c", "male", _m(*v)) for v in rng.normal([5, -30, 4], [3, 5, 0.7], size=(300, 3))]
    cal = fit_calibration(items, cfg.prosody)
    counts = {"low": 0, "normal": 0, "high": 0}
    for _, _, m in items:
        counts[assign_levels(m, "c", "male", cal)[0]["pitch_level"]] += 1
    assert all(95 <= c <= 105 for c in counts.values()), counts


def test_small_groups_fall_back_and_say_so(cfg):
    p = cfg.prosody.model_copy(update={"min_group_size": 20})
    items = (
        _corpus("big", "female", 25, 12.0, -30.0, 4.0)
        + _corpus("big", "male", 25, 0.0, -30.0, 4.0)
        + _corpus("small", "male", 5, 40.0, 0.0, 9.0)  # too few: no group of its own
        + _corpus("big", "unknown", 3, 6.0, -30.0, 4.0)
    )
    cal = fit_calibration(items, p)
    assert "small" not in cal.groups["energy"] and "small/male" not in cal.groups["pitch"]
    _, used = assign_levels(_m(3.0, -30.0, 4.0), "small", "male", cal)
    assert used == {"pitch": "global/male", "energy": "global", "speed": "global"}
    _, used = assign_levels(_m(3.0, -30.0, 4.0), "big", "unknown", cal)  # 3 unknowns: no gender group anywhere
    assert used["pitch"] == "global" and used["energy"] == "big"
    # a corpus never seen at fitting time (a later batch) uses the global thresholds too
    _, used = assign_levels(_m(3.0, -30.0, 4.0), "new", "female", cal)
    assert used == {"pitch": "global/female", "energy": "global", "speed": "global"}


def test_missing_pitch_is_left_out_not_guessed(cfg):
    p = cfg.prosody.model_copy(update={"min_group_size": 3})
    items = _corpus("a", "male", 6, 0.0, -30.0, 4.0) + [("a", "male", {"f0_median_st": None, "rms_dbfs": -30.0, "articulation_rate_sps": 4.0})]
    cal = fit_calibration(items, p)
    assert cal.groups["pitch"]["a/male"].n == 6 and cal.groups["energy"]["a"].n == 7
    levels, used = assign_levels({"f0_median_st": float("nan"), "rms_dbfs": -30.0, "articulation_rate_sps": 4.0}, "a", "male", cal)
    assert levels["pitch_level"] is None and levels["energy_level"] is not None and used["pitch"] == "a/male"


def test_json_round_trip_labels_a_later_batch_identically(cfg, tmp_path):
    rng = np.random.default_rng(1)
    items = [("x", g, _m(*v)) for g in ("male", "female") for v in rng.normal([8, -35, 4.5], [4, 6, 0.8], size=(40, 3))]
    cal = fit_calibration(items, cfg.prosody)
    path = cal.save(tmp_path / "calibration.json")
    loaded = Calibration.load(path)
    assert loaded.groups == cal.groups and loaded.min_group_size == cal.min_group_size
    json.loads(path.read_text())  # plain JSON artifact
    batch = [("x", g, _m(*v)) for g in ("male", "female") for v in rng.normal([8, -35, 4.5], [4, 6, 0.8], size=(20, 3))]
    for corpus, gender, m in batch:
        assert assign_levels(m, corpus, gender, loaded) == assign_levels(m, corpus, gender, cal)


def test_bad_calibration_files_are_rejected(cfg):
    with pytest.raises(CalibrationError):
        Calibration.from_json("{not json")
    with pytest.raises(CalibrationError):
        Calibration.from_json(json.dumps({"version": 99}))
    with pytest.raises(CalibrationError):
        fit_calibration([], cfg.prosody)
    with pytest.raises(CalibrationError, match="not a calibration file"):
        Calibration.from_json("[1, 2]")


def test_a_bad_calibration_file_is_named_and_refused_before_any_clip_is_measured(cfg, tmp_path, monkeypatch):
    """It used to be read after every clip was measured (hours on a large corpus), and a missing file or a JSON
    list ended in a bare traceback."""
    import emotionthinker.annotate as A

    def measuring(*args, **kwargs):
        raise AssertionError("a clip was measured before the calibration was read")

    monkeypatch.setattr(A, "measure_or_quarantine", measuring)
    records = [{"id": "a", "audio_path": str(tmp_path / "a.wav"), "corpus": "r"}]
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "v99.json").write_text(json.dumps({"version": 99}))
    for name, message in [("missing.json", "cannot read the calibration"), ("list.json", "not a calibration file"),
                          ("v99.json", "calibration version 99")]:  # fmt: skip
        with pytest.raises(CalibrationError, match=rf"{name}.*{message}|{message}.*{name}"):
            A.annotate_manifest(records, tmp_path / "out.jsonl", cfg, use_asr=False, calibration=tmp_path / name,
                                workers=1, progress=False)  # fmt: skip


def test_fit_from_annotated_records(cfg):
    records = [
        {"corpus": "r", "gender": "female", "prosody": _m(10.0 + i, -30.0 - i, 4.0)} for i in range(6)
    ]
    cal = fit_calibration_from_records(records, cfg.prosody)  # test profile: min_group_size 5
    assert "r/female" in cal.groups["pitch"] and cal.groups["speed"]["r"].n == 6


def test_a_small_gender_group_is_never_pooled_with_the_other_gender(cfg):
    """Below min_group_size everywhere (the tiny demo: 48 voiced clips per gender, min 50), pitch keeps
    per-gender thresholds; pooled ones would call every female clip 'high' and every male clip 'low'."""
    p = cfg.prosody.model_copy(update={"min_group_size": 50})
    items = _corpus("d", "female", 12, 10.0, -30.0, 4.0) + _corpus("d", "male", 12, -2.0, -30.0, 4.0)
    cal = fit_calibration(items, p)
    for gender, st0 in (("female", 10.0), ("male", -2.0)):
        counts = {"low": 0, "normal": 0, "high": 0}
        for i in range(12):
            levels, used = assign_levels(_m(st0 + i, -30.0, 4.0), "d", gender, cal)
            counts[levels["pitch_level"]] += 1
            assert used["pitch"] == f"global/{gender}" and used["energy"] == "global"
        assert counts == {"low": 4, "normal": 4, "high": 4}, (gender, counts)
    assert cal.groups["pitch"]["global/female"].n == 12
    _, used = assign_levels(_m(5.0, -30.0, 4.0), "d", "unknown", cal)
    assert used["pitch"] == "global"  # no gender: the pooled thresholds are all there is


def test_relabelling_a_labelled_record_takes_the_new_levels(cfg):
    from emotionthinker.annotate import apply_levels

    p = cfg.prosody.model_copy(update={"min_group_size": 3})
    cal = fit_calibration(_corpus("r", "female", 9, 10.0, -30.0, 4.0), p)
    rec = {"id": "x", "corpus": "r", "gender": "female", "prosody": {**_m(10.0, -22.0, 4.0), "f0_median_hz": 178.0},
           "annotations": {"pitch_level": "high", "energy_level": "low", "speed_level": "fast", "gender": "Female"}}
    [(status, out)] = list(apply_levels([rec], cal))
    assert status == "ok"
    assert {k: out["annotations"][k] for k in ("pitch_level", "energy_level", "speed_level")} == {
        "pitch_level": "low", "energy_level": "high", "speed_level": "slow"}
    assert out["annotations"]["gender"] == "Female"


def test_calibration_gender_prefers_the_corpus_then_the_classifier():
    from emotionthinker.prosody.levels import calibration_gender

    assert calibration_gender({"gender": "Female", "annotations": {"gender": "Male"}}) == "female"
    assert calibration_gender({"gender": None, "annotations": {"gender": "Male"}}) == "male"
    assert calibration_gender({"gender": "unknown", "annotations": {"gender": "unknown"}}) == "unknown"
    assert calibration_gender({}) == "unknown"


def test_a_clip_without_an_energy_or_rate_measure_is_quarantined_not_guessed(cfg):
    from emotionthinker.annotate import apply_levels

    p = cfg.prosody.model_copy(update={"min_group_size": 3})
    cal = fit_calibration(_corpus("r", "female", 9, 10.0, -30.0, 4.0), p)
    rec = {"id": "x", "audio_path": "x.wav", "corpus": "r", "gender": "female", "annotations": {},
           "prosody": {"f0_median_st": 12.0, "f0_median_hz": 200.0, "rms_dbfs": None, "articulation_rate_sps": 4.0}}
    [(status, q)] = list(apply_levels([rec], cal))
    assert status == "quarantine" and q["reason"] == "unmeasurable_level" and "energy_level" in q["detail"]



def test_a_handful_of_clips_is_labelled_by_the_reference_not_against_itself(cfg, tmp_path):
    """Two female clips with the same high voice: own tertiles would call one 'low' and one 'high'."""
    p = cfg.prosody.model_copy(update={"min_group_size": 50, "min_batch_group_size": 20})
    reference = load_reference_calibration()
    ref_female = reference.groups["pitch"]["global/female"]
    high_st = ref_female.high_above + 2.0
    items = [("mine", "female", _m(high_st, -18.0, 5.0)), ("mine", "female", _m(high_st + 0.5, -18.0, 5.0))]
    items += _corpus("mine", "male", 6, 2.0, -25.0, 4.0)
    own = fit_calibration(items, p)
    assert [assign_levels(m, c, g, own)[0]["pitch_level"] for c, g, m in items[:2]] == ["low", "high"]

    cal = fit_calibration(items, p, reference)
    assert set(cal.groups["pitch"]) == {"reference", "reference/female", "reference/male"}
    assert cal.groups["pitch"]["reference/female"] == ref_female
    for corpus, gender, m in items[:2]:
        levels, used = assign_levels(m, corpus, gender, cal)
        assert levels["pitch_level"] == "high"
        assert used == {"pitch": "reference/female", "energy": "reference", "speed": "reference"}
    loaded = Calibration.load(cal.save(tmp_path / "c.json"))  # a later batch gets the same thresholds
    assert all(assign_levels(m, c, g, loaded) == assign_levels(m, c, g, cal) for c, g, m in items)


def test_a_batch_big_enough_keeps_its_own_thresholds(cfg):
    p = cfg.prosody.model_copy(update={"min_group_size": 50, "min_batch_group_size": 20})
    items = _corpus("d", "female", 24, 10.0, -30.0, 4.0) + _corpus("d", "male", 19, -2.0, -30.0, 4.0)
    cal = fit_calibration(items, p, load_reference_calibration())
    # 24 female clips and 43 in all are enough; the 19 male ones are not
    assert set(cal.groups["pitch"]) == {"global", "global/female", "reference/male"}
    assert set(cal.groups["energy"]) == {"global"} and cal.groups["energy"]["global"].n == 43
    _, used = assign_levels(_m(5.0, -30.0, 4.0), "d", "unknown", cal)
    assert used["pitch"] == "global"
