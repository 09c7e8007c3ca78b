"""Text generation: GenerationConfig, logits processors, greedy/sampling/beam search, generate()."""
from .config import GenerationConfig
from .utils import GenerationMixin

__all__ = ["GenerationConfig", "GenerationMixin"]
