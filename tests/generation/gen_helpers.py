"""Loading the generation fixtures with minibertgen and with transformers (cached per test session)."""
from functools import lru_cache

import numpy as np

from cases import FIXTURES, MODELS, model_inputs  # noqa: F401
from conftest import require_module


@lru_cache(maxsize=None)
def load_model(name):
    from minibertgen.encoder_decoder import EncoderDecoderModel
    from minibertgen.modeling import BertGenerationDecoder

    cls = EncoderDecoderModel if MODELS[name]["kind"] == "seq2seq" else BertGenerationDecoder
    return cls.from_pretrained(FIXTURES / name)


def run_case(case):
    """minibertgen's generate() on a case: ids as a NumPy array."""
    ids, mask = model_inputs(case)
    kwargs = dict(case["settings"])
    if "decoder_input_ids" in kwargs:
        kwargs["decoder_input_ids"] = np.array(kwargs["decoder_input_ids"])
    return np.asarray(load_model(case["model"]).generate(ids, attention_mask=mask, **kwargs))


_TRANSFORMERS_MODELS = {}


def transformers_model(name):
    """The same fixture loaded by transformers (skips without torch + transformers)."""
    transformers = require_module("transformers")
    require_module("torch")
    if name not in _TRANSFORMERS_MODELS:
        transformers.logging.set_verbosity_error()
        cls = (transformers.EncoderDecoderModel if MODELS[name]["kind"] == "seq2seq"
               else transformers.BertGenerationDecoder)
        _TRANSFORMERS_MODELS[name] = cls.from_pretrained(FIXTURES / name).eval()
    return _TRANSFORMERS_MODELS[name]
