"""minibertgen: a from-scratch NumPy/CuPy engine for BertGeneration encoder-decoders.

The public names are transformers': swap ``transformers`` for ``minibertgen`` (and
``return_tensors="pt"`` for ``"np"``) and the documented examples run.
"""
from .backend import Device, parse_device
from .cache import EncoderDecoderCache
from .config import BertGenerationConfig, EncoderDecoderConfig, PretrainedConfig
from .encoder_decoder import EncoderDecoderModel
from .modeling import BertGenerationDecoder, BertGenerationEncoder, PreTrainedModel
from .outputs import ModelOutput

__version__ = "0.1.0"

__all__ = [
    "BertGenerationConfig",
    "BertGenerationDecoder",
    "BertGenerationEncoder",
    "Device",
    "EncoderDecoderCache",
    "EncoderDecoderConfig",
    "EncoderDecoderModel",
    "ModelOutput",
    "PretrainedConfig",
    "PreTrainedModel",
    "parse_device",
]
