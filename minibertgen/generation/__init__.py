"""Text generation: GenerationConfig, logits processors, greedy/sampling/beam search, generate()."""
from .config import GenerationConfig
from .outputs import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput, GenerateDecoderOnlyOutput,
                      GenerateEncoderDecoderOutput)
from .processors import *  # noqa: F401,F403 (transformers' processor classes)
from .processors import __all__ as _processor_names
from .utils import GenerationMixin

__all__ = ["GenerationConfig", "GenerationMixin", "GenerateDecoderOnlyOutput", "GenerateEncoderDecoderOutput",
           "GenerateBeamDecoderOnlyOutput", "GenerateBeamEncoderDecoderOutput", *_processor_names]
