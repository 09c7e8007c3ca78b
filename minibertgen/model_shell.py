"""What every model class shares around its parameters (ModelShell): counting them,
the memory they take, moving and casting, the generation config a generating model gets,
and save_pretrained.  The halves (modeling.py) and EncoderDecoderModel (encoder_decoder.py)
build on it; training's train() / eval() / named_parameters() come from training.TrainingMixin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import placement
from .backend import device_and_dtype, parse_device
from .checkpoint.saving import save_model, saved_state
from .generation.config import move_generation_parameters
from .module_spellings import ModuleSpellings
from .training import TrainingMixin

__all__ = ["ModelShell"]

_EMBEDDING_TABLES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                     "distance_embedding.weight")  # transformers' nn.Embedding weights in these models


class ModelShell(ModuleSpellings, TrainingMixin):
    """What every model class shares around its parameters: counting, saving; training's
    train() / eval() / named_parameters() / zero_grad() come from training.TrainingMixin."""

    main_input_name = "input_ids"

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Each distinct array once (a tied weight once), 8-bit and 4-bit weights by the values
        they stand for, as transformers counts.  ``only_trainable``: without the quantized
        weights (frozen, as bitsandbytes' are) and those with requires_grad=False; ``exclude_embeddings``: without the embedding
        tables (words, positions, token types, relative distances; a head tied to the word
        embeddings goes with them)."""
        names = {}  # id -> (array, its checkpoint names)
        frozen = ({id(p.data) for p in self._parameters_by_array().values() if not p.requires_grad}
                  if only_trainable else set())
        for name, array in self.state_dict().items():
            names.setdefault(id(array), (array, []))[1].append(name)
        total = 0
        for array, aliases in names.values():
            if only_trainable and (getattr(array, "is_quantized", False) or id(array) in frozen):
                continue
            if exclude_embeddings and any(name.endswith(_EMBEDDING_TABLES) for name in aliases):
                continue
            total += array.size
        return int(total)

    def get_memory_footprint(self) -> int:
        return placement.memory_footprint(self.state_dict())

    def _move_and_cast(self, args, device, dtype):
        """``to(...)``'s arguments -> (the Device to use, the NumPy dtype to cast to or None)."""
        device, dtype = device_and_dtype(args, device, dtype)
        cast = placement.cast_dtype(self.state_dict(), dtype)
        return (parse_device(device) if device is not None else self.device), cast

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate")

    def _make_generation_config(self) -> None:
        """A model that generates gets its generation config when it is made, as in transformers
        (read from generation_config.json, else derived from the model config): settings put on
        model.config later reach generate() only through legacy_generation_config's rule."""
        if self.can_generate():
            self._generation_config = None
            self.generation_config  # noqa: B018 (made and remembered by the property)

    def _return_tuple(self, return_dict) -> bool:
        """return_dict=False (or config.return_dict=False) asks for transformers' plain tuple."""
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        return not return_dict

    def _mark_architectures(self) -> None:
        self.config.architectures = [type(self).__name__]

    def _quantization_config(self) -> dict:
        """The quantization_config of a quantized model: its config's, else the one its
        encoder and decoder were loaded with (they must agree: config.json holds one)."""
        found = getattr(self.config, "quantization_config", None)
        parts = [getattr(self.config, part, None) for part in ("encoder", "decoder")]
        parts = [c.quantization_config for c in parts if getattr(c, "quantization_config", None) is not None]
        if found is None and parts and all(p == parts[0] for p in parts):
            found = parts[0]
        if found is None:
            raise ValueError("this model holds quantized weights but its config has no quantization_config "
                             "(and its encoder's and decoder's differ): cannot save it")
        return found

    def save_pretrained(self, save_directory, safe_serialization=True, **kwargs) -> Path:
        """Write config.json + model.safetensors (+ generation_config.json), loadable by transformers 4.57.

        Each half is written with its own model_type and checkpoint names; a tied weight is
        written once, under the name it ties to, as transformers writes it.  Quantized
        weights are written packed, in bitsandbytes' layout (quantization/serialization.py),
        and config.json gets their ``quantization_config``.  ``safe_serialization=False``
        (pytorch_model.bin) needs torch, which minibertgen never imports: refused.
        """
        if safe_serialization is not True:
            raise ValueError(f"safe_serialization={safe_serialization!r}: minibertgen writes safetensors only "
                             "(a pytorch_model.bin would need torch); transformers reads model.safetensors")
        unknown = [k for k in kwargs if k not in ("max_shard_size", "push_to_hub", "is_main_process")]
        if unknown or kwargs.get("push_to_hub"):
            raise TypeError(f"save_pretrained() got unsupported keyword argument(s): "
                            f"{', '.join(unknown or ['push_to_hub'])}")
        directory = Path(save_directory)
        flat = saved_state(self.state_dict(), self._tied_checkpoint_pairs())
        if any(getattr(v, "is_quantized", False) for v in flat.values()):
            from .quantization.serialization import serialize_quantized

            self.config.quantization_config = self._quantization_config()
            flat = serialize_quantized(flat)
        self._mark_architectures()
        if self.can_generate():
            move_generation_parameters(self.config, self.generation_config)
        self.config.dtype = str(np.dtype(self.dtype))
        # All files are written first, then swapped in together (checkpoint/saving.py).
        generation_config = self.generation_config if self.can_generate() else None
        return save_model(directory, self.config, flat, generation_config)
