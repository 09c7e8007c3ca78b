"""minibertgen: a from-scratch NumPy/CuPy engine for BertGeneration encoder-decoders.

The public names are transformers': swap ``transformers`` for ``minibertgen`` (and
``return_tensors="pt"`` for ``"np"``) and the documented examples run.
"""
from . import checkpoint  # noqa: F401  (minibertgen.checkpoint.hub etc.)
from . import optim  # noqa: F401  (minibertgen.optim.AdamW, as torch.optim)
from . import models  # noqa: F401  (minibertgen.models.bert2bert_dates(): the model shipped in the package)
from .backend import Device, parse_device
from .cache_surface import EncoderDecoderCache
from .config import BertConfig, BertGenerationConfig, EncoderDecoderConfig, PretrainedConfig, RobertaConfig
from .encoder_decoder import EncoderDecoderModel
from .generation import GenerationConfig, GenerationMixin
from .generation.processors import *  # noqa: F401,F403 (LogitsProcessorList, TopKLogitsWarper, ...)
from .generation.processors import __all__ as _processor_names
from .modeling import (BertGenerationDecoder, BertGenerationEncoder, BertLMHeadModel, BertModel, PreTrainedModel,
                       RobertaForCausalLM, RobertaModel)
from .outputs import ModelOutput
from .pipeline import Text2TextGenerationPipeline, pipeline
from .progress import set_progress_bars
from .quantization import BitsAndBytesConfig
from .seeding import set_seed
from .trainer import DataCollatorForSeq2Seq, EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments
from .tokenizers import (AddedToken, AutoTokenizer, BatchEncoding, BertGenerationTokenizer, BertTokenizer,
                         PreTrainedTokenizer, RobertaTokenizer)

__version__ = "0.1.0"

__all__ = [
    "AddedToken",
    "AutoTokenizer",
    "BatchEncoding",
    "BertConfig",
    "BertGenerationConfig",
    "BertLMHeadModel",
    "BertModel",
    "BitsAndBytesConfig",
    "BertGenerationDecoder",
    "BertGenerationEncoder",
    "BertGenerationTokenizer",
    "BertTokenizer",
    "Device",
    "EncoderDecoderCache",
    "EncoderDecoderConfig",
    "EncoderDecoderModel",
    "GenerationConfig",
    "GenerationMixin",
    "ModelOutput",
    "PreTrainedModel",
    "PreTrainedTokenizer",
    "PretrainedConfig",
    "RobertaConfig",
    "RobertaForCausalLM",
    "RobertaModel",
    "RobertaTokenizer",
    "Text2TextGenerationPipeline",
    "DataCollatorForSeq2Seq",
    "EarlyStoppingCallback",
    "Seq2SeqTrainer",
    "Seq2SeqTrainingArguments",
    "parse_device",
    "pipeline",
    "set_progress_bars",
    "set_seed",
    *_processor_names,
]
