"""What generate(return_dict_in_generate=True) returns: transformers' four output classes.

One class per kind of model and search, each a ModelOutput with its fields in
transformers' order (fields left as None are absent, as in every ModelOutput):

    decoder alone,  greedy / sampling / assisted   GenerateDecoderOnlyOutput
    decoder alone,  beam search                     GenerateBeamDecoderOnlyOutput
    encoder-decoder, greedy / sampling / assisted  GenerateEncoderDecoderOutput
    encoder-decoder, beam search                    GenerateBeamEncoderDecoderOutput

so ``isinstance(out, GenerateEncoderDecoderOutput)`` works as it does with transformers.
The older names transformers still exports (GreedySearch..., Sample..., BeamSearch...,
BeamSample...) are the same classes.
"""
from __future__ import annotations

from ..outputs import ModelOutput

__all__ = ["GenerateDecoderOnlyOutput", "GenerateEncoderDecoderOutput", "GenerateBeamDecoderOnlyOutput",
           "GenerateBeamEncoderDecoderOutput", "generate_output_class"]

_DECODER_ONLY = ("attentions", "hidden_states")
_ENCODER_DECODER = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                    "decoder_hidden_states")


class _GenerateOutput(ModelOutput):
    fields = ()

    def __init__(self, **values):
        unknown = [name for name in values if name not in self.fields]
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(unknown)}: "
                            f"expected some of {', '.join(self.fields)}")
        super().__init__(**{name: values.get(name) for name in self.fields})


class GenerateDecoderOnlyOutput(_GenerateOutput):
    """A decoder alone, one sequence per row (greedy search, sampling, assisted decoding)."""

    fields = ("sequences", "scores", "logits", *_DECODER_ONLY, "past_key_values")


class GenerateEncoderDecoderOutput(_GenerateOutput):
    """An encoder-decoder model, one sequence per row (greedy search, sampling, assisted decoding)."""

    fields = ("sequences", "scores", "logits", *_ENCODER_DECODER, "past_key_values")


class GenerateBeamDecoderOnlyOutput(_GenerateOutput):
    """A decoder alone, beam search: also the final beam scores and each token's beam."""

    fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", *_DECODER_ONLY, "past_key_values")


class GenerateBeamEncoderDecoderOutput(_GenerateOutput):
    """An encoder-decoder model, beam search: also the final beam scores and each token's beam."""

    fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", *_ENCODER_DECODER,
              "past_key_values")


def generate_output_class(seq2seq: bool, beams: bool) -> type:
    """The class generate() returns for this kind of model and search."""
    if beams:
        return GenerateBeamEncoderDecoderOutput if seq2seq else GenerateBeamDecoderOnlyOutput
    return GenerateEncoderDecoderOutput if seq2seq else GenerateDecoderOnlyOutput


# transformers' earlier names for the same classes
GreedySearchDecoderOnlyOutput = SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
GreedySearchEncoderDecoderOutput = SampleEncoderDecoderOutput = GenerateEncoderDecoderOutput
BeamSearchDecoderOnlyOutput = BeamSampleDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput
BeamSearchEncoderDecoderOutput = BeamSampleEncoderDecoderOutput = GenerateBeamEncoderDecoderOutput
