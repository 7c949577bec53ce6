"""The `tiny` base audio LLM is assembled from the packaged pretrained weights, not random ones.

Slow: the first run converts SmolLM2 from GGUF and assembles the model (~50 s on 2 cores); later runs
load the cache under var/cache/models.
"""

from __future__ import annotations

import re

import pytest
import torch

from emotionthinker.audio import load_audio
from emotionthinker.config import PROJECT_ROOT, load_config
from tests.conftest import RAVDESS_DIR, requires_ravdess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    return load_config("tiny", environ={}, overrides={"paths": {"workspace": str(ws), "cache": str(PROJECT_ROOT / "var" / "cache")}})


@pytest.fixture(scope="module")
def whisper():
    from models.convert_ctranslate2 import load_whisper_from_ct2

    return load_whisper_from_ct2()


@pytest.fixture(scope="module")
def smollm2(cfg):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from models.convert_gguf import ensure_smollm2

    folder = ensure_smollm2(cfg.cache_dir)
    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def base(cfg):
    from models.backbone import AudioLM

    return AudioLM.from_source("packaged:tiny-base", cfg)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


@requires_ravdess
@pytest.mark.parametrize(
    "name, expected",
    [
        ("Actor_01/03-01-01-01-01-01-01.wav", "kids are talking by the door"),
        ("Actor_02/03-01-05-02-02-01-02.wav", "dogs are sitting by the door"),
    ],
)
def test_converted_whisper_transcribes_ravdess(whisper, name, expected):
    from transformers import WhisperFeatureExtractor

    from models.convert_ctranslate2 import whisper_tokenizer

    features = WhisperFeatureExtractor(feature_size=80)(load_audio(RAVDESS_DIR / name), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = whisper.generate(features.input_features, max_new_tokens=20)
    assert _words(whisper_tokenizer().decode(ids[0], skip_special_tokens=True)) == expected


def test_converted_smollm2_continues_text(smollm2):
    model, tokenizer = smollm2
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt.input_ids.shape[1] :])


def test_tiny_base_holds_the_converted_weights(base, whisper, smollm2, cfg):
    lm, _ = smollm2
    model = base.model
    assert type(model).__name__ == "Qwen2AudioForConditionalGeneration"
    assert base.window_s == cfg.models.audio_window_s == 8
    assert 160e6 < base.num_parameters() < 180e6

    tower, encoder = model.model.audio_tower.state_dict(), whisper.model.encoder.state_dict()
    assert tower.keys() == encoder.keys()
    positions = cfg.models.audio_window_s * 50
    assert tower["embed_positions.weight"].shape[0] == positions == model.config.audio_config.max_source_positions
    for key, value in encoder.items():
        expected = value[:positions] if key == "embed_positions.weight" else value
        assert torch.equal(tower[key], expected), key

    ours, theirs = model.model.language_model.state_dict(), lm.model.state_dict()
    vocab = theirs["embed_tokens.weight"].shape[0]  # 49152; the 3 audio tokens are new rows
    assert ours["embed_tokens.weight"].shape[0] == vocab + 3 == len(base.tokenizer)
    for key, value in theirs.items():
        got = ours[key][:vocab] if key == "embed_tokens.weight" else ours[key]
        assert torch.equal(got, value), key
    assert torch.equal(model.lm_head.weight[:vocab], lm.lm_head.weight)
    assert model.model.multi_modal_projector.linear.weight.std() > 0


def test_tiny_base_lm_still_answers_text(base):
    tok = base.tokenizer
    prompt = tok("The capital of France is", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = base.model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt.input_ids.shape[1] :])


@requires_ravdess
def test_tiny_base_generates_for_audio_and_scores_completions(base):
    audio = [load_audio(RAVDESS_DIR / "Actor_01/03-01-05-01-01-01-01.wav"), load_audio(RAVDESS_DIR / "Actor_02/03-01-04-01-02-01-02.wav")]
    out = base.generate(audio, max_new_tokens=6)
    assert len(out.texts) == 2 and all(1 <= len(ids) <= 6 for ids in out.completion_ids)
    lp = base.completion_logprobs(out.inputs, ["<answer>angry</answer>", "<answer>sad</answer>"])
    assert torch.isfinite(lp.logprobs).all() and (lp.logprobs[lp.mask] < 0).all()
