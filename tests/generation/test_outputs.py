"""generate()'s attentions / hidden states without the reference: what changes when they are
asked for (only the return_dict_in_generate output) and which step runs (never the CUDA graph)."""
import numpy as np
import pytest

from cases import model_inputs
from gen_helpers import load_model
from minibertgen.generation import GenerationConfig, step as step_module
from minibertgen.generation.step import DecoderStep, make_step, recorded_outputs

BOTH = {"output_attentions": True, "output_hidden_states": True}
CASES = [("toy_bert2bert", {}), ("toy_bert2bert", {"num_beams": 3}),
         ("random_decoder", {"max_new_tokens": 5}), ("random_decoder", {"max_new_tokens": 5, "num_beams": 2}),
         ("random_seq2seq", {"do_sample": True, "num_return_sequences": 2, "max_new_tokens": 5})]


def _inputs(name):
    return model_inputs({"model": name, "inputs": "batch"})


@pytest.mark.parametrize("name, settings", CASES)
def test_without_return_dict_the_flags_change_nothing(name, settings):
    model = load_model(name)
    ids, mask = _inputs(name)
    seed = 0 if settings.get("do_sample") else None
    plain = model.generate(ids, attention_mask=mask, seed=seed, **settings)
    flagged = model.generate(ids, attention_mask=mask, seed=seed, **settings, **BOTH)
    assert isinstance(flagged, np.ndarray)  # still the bare ids, not a ModelOutput
    np.testing.assert_array_equal(flagged, plain)
    recorded = model.generate(ids, attention_mask=mask, seed=seed, return_dict_in_generate=True, **settings, **BOTH)
    np.testing.assert_array_equal(recorded.sequences, plain)  # recording does not change the search


@pytest.mark.parametrize("name", ["toy_bert2bert", "random_decoder"])
def test_return_dict_without_the_flags_has_no_per_layer_fields(name):
    ids, mask = _inputs(name)
    out = load_model(name).generate(ids, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True)
    assert set(out) == {"sequences", "past_key_values"}
    for field in ("attentions", "hidden_states", "encoder_attentions", "encoder_hidden_states",
                  "decoder_attentions", "cross_attentions", "decoder_hidden_states"):
        assert getattr(out, field) is None


def test_fields_in_transformers_order():
    ids, mask = _inputs("toy_bert2bert")
    out = load_model("toy_bert2bert").generate(ids, attention_mask=mask, num_beams=2, max_new_tokens=3,
                                               return_dict_in_generate=True, output_scores=True,
                                               output_logits=True, **BOTH)
    assert list(out) == ["sequences", "sequences_scores", "scores", "logits", "beam_indices", "encoder_attentions",
                         "encoder_hidden_states", "decoder_attentions", "cross_attentions", "decoder_hidden_states",
                         "past_key_values"]
    assert out[1] is out.sequences_scores


def test_given_encoder_outputs_supply_the_encoder_fields():
    model = load_model("toy_bert2bert")
    ids, mask = _inputs("toy_bert2bert")
    encoded = model.encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
    out = model.generate(encoder_outputs=encoded, attention_mask=mask, max_new_tokens=3,
                         return_dict_in_generate=True, **BOTH)
    assert out.encoder_attentions is encoded["attentions"]
    assert out.encoder_hidden_states is None  # the given outputs have none; nothing is recomputed
    assert len(out.decoder_hidden_states) == len(out.decoder_attentions) == out.sequences.shape[1] - 1


@pytest.mark.parametrize("flags, seq2seq, expected", [
    ({}, True, ()),
    (BOTH, True, ()),  # no return_dict_in_generate: nothing is recorded
    ({**BOTH, "return_dict_in_generate": True}, True, ("attentions", "cross_attentions", "hidden_states")),
    ({**BOTH, "return_dict_in_generate": True}, False, ("attentions", "hidden_states")),
    ({"output_hidden_states": True, "return_dict_in_generate": True}, False, ("hidden_states",)),
])
def test_recorded_outputs(flags, seq2seq, expected):
    assert recorded_outputs(GenerationConfig(**flags), seq2seq) == expected


class _FakeGraphedStep:
    """Stands in for cuda_graph.GraphedDecoderStep on the CPU: counts uses, runs the eager step."""
    made = 0

    def __init__(self, eager):
        type(self).made += 1
        self.eager = eager

    def __call__(self, ids):
        return self.eager(ids)

    def reorder(self, rows):
        self.eager.reorder(rows)


@pytest.fixture
def graph_available(monkeypatch):
    """Pretend the CUDA graph could be used (as on a GPU), with a fake graphed step."""
    _FakeGraphedStep.made = 0
    monkeypatch.setattr(step_module, "graph_supported", lambda decoder, cache: True)
    monkeypatch.setattr(step_module, "GraphedDecoderStep", _FakeGraphedStep)
    return _FakeGraphedStep


@pytest.mark.parametrize("use_cuda_graph", [None, True])
def test_recording_never_selects_the_cuda_graph_step(graph_available, use_cuda_graph):
    decoder = load_model("random_decoder")
    args = (decoder, None, None, None, None, 10)
    assert isinstance(make_step(*args, use_cuda_graph=use_cuda_graph), graph_available)
    assert isinstance(make_step(*args, use_cuda_graph=False), DecoderStep)
    recording = make_step(*args, use_cuda_graph=use_cuda_graph, record=("attentions",))
    assert isinstance(recording, DecoderStep) and list(recording.records) == ["attentions"]


def test_generate_with_per_layer_outputs_runs_eagerly(graph_available):
    model = load_model("toy_bert2bert")
    ids, mask = _inputs("toy_bert2bert")
    plain = model.generate(ids, attention_mask=mask, num_beams=2, use_cuda_graph=True)
    assert graph_available.made == 1  # the graphed step is chosen when nothing is recorded
    out = model.generate(ids, attention_mask=mask, num_beams=2, use_cuda_graph=True, return_dict_in_generate=True,
                         output_attentions=True)
    assert graph_available.made == 1  # ... and not when attentions are
    np.testing.assert_array_equal(out.sequences, plain)
    assert len(out.decoder_attentions) == plain.shape[1] - 1


def test_graphed_step_refuses_a_recording_step():
    from minibertgen.fast.cuda_graph import GraphedDecoderStep

    step = DecoderStep(load_model("random_decoder"), None, None, None, None, 10, record=("hidden_states",))
    with pytest.raises(ValueError, match="hidden_states"):
        GraphedDecoderStep(step)
