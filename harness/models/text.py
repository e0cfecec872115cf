"""Text encoders (model.kind text): a transformers sequence classifier and its tokenizer from a hub
id, a local directory or a packaged path (`pkg://...`) through the same transformers calls; or a
random init from a config (tests)."""

from pathlib import Path

import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from harness.assets import resolve_path
from harness.errors import HarnessError, one_line

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def model_path(path: str) -> str:
    """A packaged path resolved; a local path (absolute, ./, ../, ~) that must exist; else a hub id."""
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise HarnessError(
            f"local path '{path}' does not exist; give an existing folder, a hub id "
            "(owner/name) or pkg://<package>/<path>"
        )
    return resolve_path(path)


def load_tokenizer(cfg, cache_dir: str | None = None):
    path = model_path(cfg.tokenizer or cfg.path)
    try:
        return AutoTokenizer.from_pretrained(path, revision=cfg.revision)
    except (OSError, ValueError) as error:
        raise HarnessError(
            f"model '{cfg.name}': tokenizer could not be loaded from '{path}': {one_line(error)}"
        ) from None


def max_positions(cfg, cache_dir: str | None = None) -> int | None:
    """The longest input (tokens) a text model's position embeddings take; None where positions are
    relative only (DeBERTa-v2/v3)."""
    path = model_path(cfg.path)
    try:
        config = AutoConfig.from_pretrained(path, revision=cfg.revision, **cfg.overrides)
    except (OSError, ValueError) as error:
        raise HarnessError(f"model '{cfg.name}' could not be loaded from '{path}': {one_line(error)}") from None
    if not getattr(config, "position_biased_input", True) or not hasattr(config, "max_position_embeddings"):
        return None
    offset = config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    return config.max_position_embeddings - offset


def sequence_classifier(cfg, num_labels: int, cache_dir: str | None = None):
    """The encoder with a fresh task head of `num_labels` outputs (1: regression)."""
    path = model_path(cfg.path)
    problem = "regression" if num_labels == 1 else "single_label_classification"
    try:
        if cfg.random_init:
            config = AutoConfig.from_pretrained(path, num_labels=num_labels, problem_type=problem, **cfg.overrides)
            return AutoModelForSequenceClassification.from_config(config)
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, problem_type=problem, revision=cfg.revision, **cfg.overrides
        )
    except (OSError, ValueError) as error:
        raise HarnessError(f"model '{cfg.name}' could not be loaded from '{path}': {one_line(error)}") from None
