"""pipeline("text2text-generation"): text in, generated text out, as transformers does it.

    generator = pipeline("text2text-generation", model="path/or/hub-id")
    generator("Plants create energy through ")      # [{'generated_text': '...'}]

Steps per call: tokenize (with special tokens) -> model.generate with the pipeline's
generation settings -> decode with skip_special_tokens=True. A list goes through
minibertgen.batch in batches of ``batch_size``: sorted by length (unless sampling), padded
as transformers pads them, returned in input order; each row gets its unbatched result.  The
generation settings follow transformers: max_new_tokens=256 and num_beams=4 unless the
model's generation config sets its own values, then whatever the caller passes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .checkpoint.hub import resolve_model_dir
from .encoder_decoder import EncoderDecoderModel
from .generation import GenerationConfig
from .batch import generate_rows, rows_from_texts
from .tokenizers import AutoTokenizer

__all__ = ["pipeline", "Text2TextGenerationPipeline", "SUPPORTED_TASKS"]

# task -> the key prefix of its outputs ("generated_text", "summary_text", "translation_text")
SUPPORTED_TASKS = {"text2text-generation": "generated", "summarization": "summary", "translation": "translation"}
_PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}


def _task_name(task: str) -> str:
    if task in SUPPORTED_TASKS:
        return task
    if isinstance(task, str) and task.startswith("translation_") and "_to_" in task:
        return "translation"  # translation_en_to_de and friends, as transformers accepts them
    raise ValueError(f"task={task!r}: expected one of {', '.join(SUPPORTED_TASKS)} (or translation_xx_to_yy)")


def pipeline(task: str = "text2text-generation", model=None, tokenizer=None, dtype=None, device=None,
             batch_size=None, torch_dtype=None, quantization_config=None, **generate_kwargs):
    """Build a text2text-generation pipeline (also "summarization" and "translation").

    ``model``: a directory, a shipped model's name (``"bert2bert-dates"``, minibertgen.models), a
    hub id (from the local cache, else downloaded when huggingface_hub is installed and
    HF_HUB_OFFLINE is unset), or an EncoderDecoderModel.
    ``tokenizer``: None (the model's own), a directory/hub id, or a tokenizer object.
    ``dtype``: None, "auto", "float32", "float16", "bfloat16" (or torch dtypes by name).
    ``device``: None/"cpu"/-1, "cuda", "cuda:N" or a GPU index.  Other keyword arguments
    become generation defaults of this pipeline (``max_new_tokens=20``).
    """
    task = _task_name(task)
    if model is None:
        raise ValueError("model=None: minibertgen has no default model; pass a directory or hub id")
    dtype = torch_dtype if dtype is None else dtype
    if isinstance(model, (str, Path)):
        directory = resolve_model_dir(model)
        model_type = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type") \
            if (directory / "config.json").is_file() else None
        if model_type not in (None, "encoder-decoder"):
            raise ValueError(f"model={str(model)!r} is a {model_type!r} checkpoint; text2text-generation needs "
                             "an encoder-decoder checkpoint (EncoderDecoderModel)")
        loaded = EncoderDecoderModel.from_pretrained(directory, dtype=dtype, device=device,
                                                     quantization_config=quantization_config)
        tokenizer = AutoTokenizer.from_pretrained(directory if tokenizer is None else tokenizer) \
            if not _is_tokenizer(tokenizer) else tokenizer
        model = loaded
    else:
        if not isinstance(model, EncoderDecoderModel):
            raise TypeError(f"model: expected a path, a hub id or an EncoderDecoderModel, got {type(model).__name__}")
        if device is not None:
            model.to(device)
        if tokenizer is None:
            if getattr(model, "name_or_path", None) is None:
                raise ValueError("tokenizer=None and the model was not loaded from a directory: pass tokenizer=")
            tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
        elif not _is_tokenizer(tokenizer):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return Text2TextGenerationPipeline(model, tokenizer, task=task, batch_size=batch_size, **generate_kwargs)


def _is_tokenizer(value) -> bool:
    return value is not None and callable(value) and hasattr(value, "decode")


def pipeline_generation_config(model, overrides: dict) -> GenerationConfig:
    """transformers' order: pipeline defaults < the model's non-default values < caller's values."""
    config = GenerationConfig(**_PIPELINE_DEFAULTS)
    global_default = GenerationConfig()
    for key, value in model.generation_config.to_dict().items():
        if key.startswith("_") or key == "transformers_version":
            continue
        if getattr(config, key, None) == getattr(global_default, key, None) and value != getattr(
                global_default, key, None):
            setattr(config, key, value)
    # A model that sets max_length (not the global 20) keeps it over the pipeline's max_new_tokens.
    if config.max_new_tokens == _PIPELINE_DEFAULTS["max_new_tokens"] and config.max_length != 20:
        config.max_new_tokens = None
    config.update(**overrides)
    return config


class Text2TextGenerationPipeline:
    """Callable: a string or a list of strings -> [{"generated_text": ...}] per input."""

    def __init__(self, model, tokenizer, task="text2text-generation", batch_size=None, **generate_kwargs):
        self.model, self.tokenizer, self.task = model, tokenizer, _task_name(task)
        self.return_name = SUPPORTED_TASKS[self.task]
        self.batch_size = batch_size
        self.prefix = getattr(model.config, "prefix", None) or ""
        self.generation_config = pipeline_generation_config(model, generate_kwargs)

    def __call__(self, inputs, batch_size=None, return_tensors=False, return_text=True,
                 clean_up_tokenization_spaces=False, truncation=False, **generate_kwargs):
        single = isinstance(inputs, str)
        if not single and (not isinstance(inputs, (list, tuple)) or not all(isinstance(t, str) for t in inputs)):
            raise TypeError(f"inputs: expected a string or a list of strings, got {type(inputs).__name__}"
                            + ("" if not isinstance(inputs, (list, tuple)) else " with non-string items"))
        texts = [inputs] if single else list(inputs)
        size = batch_size or self.batch_size or 1
        results = [result.records for result in generate_rows(
            self, rows_from_texts(texts), batch_size=size, errors="raise", truncation=truncation,
            return_tensors=return_tensors, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            generate_kwargs=generate_kwargs, total=len(texts))]
        if single:
            return results[0]
        if all(len(result) == 1 for result in results):  # one output each: flatten, as transformers
            return [result[0] for result in results]
        return results

    def samples(self, generate_kwargs: dict) -> bool:
        """Whether generation with these call arguments draws random tokens."""
        return bool(generate_kwargs.get("do_sample", self.generation_config.do_sample))

    def encode(self, text: str, truncation=False) -> list:
        """The token ids of one input (prefix and special tokens added), checked against the
        encoder's positions."""
        ids = list(self.tokenizer(self.prefix + text, truncation=truncation)["input_ids"])
        limit = self.model.config.encoder.max_position_embeddings
        if len(ids) > limit:
            raise ValueError(f"the input has {len(ids)} tokens; the encoder takes at most {limit} "
                             "(max_position_embeddings): shorten it or pass truncation=True")
        return ids

    def generate_batch(self, ids: list, return_tensors=False, clean_up=False, generate_kwargs=None) -> list:
        """Generate from rows of token ids (padded together); returns one list of records per row."""
        encoded = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")  # [batch, longest]
        output = self.model.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                     generation_config=self.generation_config, **(generate_kwargs or {}))
        out_ids = to_numpy(output)  # [batch * returns, length]
        per_input = out_ids.reshape(len(ids), out_ids.shape[0] // len(ids), out_ids.shape[1])
        if return_tensors:
            return [[{f"{self.return_name}_token_ids": np.asarray(row)} for row in rows] for rows in per_input]
        return [[{f"{self.return_name}_text": self.tokenizer.decode(row, skip_special_tokens=True,
                                                                     clean_up_tokenization_spaces=clean_up)}
                 for row in rows] for rows in per_input]
