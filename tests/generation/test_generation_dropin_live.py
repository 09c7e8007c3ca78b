"""generate() as transformers' tests reach for it (issue 33): its output classes,
eos_token_id=-1, input_ids with inputs_embeds, assisted decoding with scores / logits /
attentions / hidden states and with sampling, PromptLookupCandidateGenerator."""
import numpy as np
import pytest

from conftest import require_module
from gen_helpers import load_model, transformers_model

import minibertgen as mb
from minibertgen.generation import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput,
                                    GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput, GenerationMixin)
from minibertgen.generation.assisted import _speculative
from minibertgen.generation.candidates import PromptLookupCandidateGenerator

torch = require_module("torch")
T = require_module("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROMPT = np.array([[5, 9, 12, 30, 41, 5, 9, 12, 30, 17, 5, 9]])  # repeats: prompt lookup finds guesses
SOURCE = np.array([[7, 11, 23, 5, 9, 40, 3]])


def _close(ours, theirs, what):
    assert len(ours) == len(theirs), (what, len(ours), len(theirs))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = b.detach().numpy() if hasattr(b, "detach") else b
        assert a.shape == b.shape, (what, i, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"{what}[{i}]")


@pytest.mark.parametrize("name, ids", [("random_decoder", PROMPT), ("random_seq2seq", SOURCE)])
@pytest.mark.parametrize("beams", [1, 2])
def test_generate_returns_transformers_output_classes(name, ids, beams):
    kwargs = dict(max_new_tokens=4, num_beams=beams, return_dict_in_generate=True, output_scores=True)
    theirs = transformers_model(name).generate(torch.tensor(ids), **kwargs)
    ours = load_model(name).generate(ids, **kwargs)
    assert type(ours).__name__ == type(theirs).__name__
    expected = {("random_decoder", 1): GenerateDecoderOnlyOutput, ("random_decoder", 2): GenerateBeamDecoderOnlyOutput,
                ("random_seq2seq", 1): GenerateEncoderDecoderOutput,
                ("random_seq2seq", 2): GenerateBeamEncoderDecoderOutput}[name, beams]
    assert isinstance(ours, expected) and isinstance(ours, mb.ModelOutput)
    assert list(ours.keys()) == [k for k, v in theirs.items() if v is not None]
    ours = load_model(name).generate(ids, max_new_tokens=2, prompt_lookup_num_tokens=2, return_dict_in_generate=True)
    assert type(ours) is (GenerateEncoderDecoderOutput if name == "random_seq2seq" else GenerateDecoderOnlyOutput)


def test_generation_mixin_is_a_direct_base():
    for cls in (mb.BertGenerationDecoder, mb.BertLMHeadModel, mb.RobertaForCausalLM, mb.EncoderDecoderModel):
        assert GenerationMixin in cls.__bases__, cls


@pytest.mark.parametrize("name, ids", [("random_decoder", PROMPT), ("random_seq2seq", SOURCE)])
def test_eos_token_id_minus_one_never_stops(name, ids):
    theirs = transformers_model(name).generate(torch.tensor(ids), max_new_tokens=6, eos_token_id=-1).numpy()
    with pytest.warns(UserWarning, match="never generated"):
        ours = load_model(name).generate(ids, max_new_tokens=6, eos_token_id=-1)
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[1] == ids.shape[1] + 6 if name == "random_decoder" else ours.shape[1] == 7


def test_input_ids_with_inputs_embeds_as_transformers():
    """The ids are the prompt (returned, counted); the embeddings feed the first step only."""
    embeds = np.random.default_rng(0).standard_normal((1, PROMPT.shape[1], 32)).astype(np.float32)
    kwargs = dict(max_new_tokens=5, return_dict_in_generate=True, output_logits=True)
    theirs = transformers_model("random_decoder").generate(input_ids=torch.tensor(PROMPT),
                                                           inputs_embeds=torch.tensor(embeds), **kwargs)
    ours = load_model("random_decoder").generate(input_ids=PROMPT, inputs_embeds=embeds, **kwargs)
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy())
    _close(ours.logits, theirs.logits, "logits")
    plain = load_model("random_decoder").generate(PROMPT, **kwargs)
    assert np.abs(plain.logits[0] - ours.logits[0]).max() > 1e-3  # the embeddings were used
    with pytest.raises(ValueError, match="matching inputs_embeds"):
        load_model("random_decoder").generate(input_ids=PROMPT[:, :4], inputs_embeds=embeds, max_new_tokens=2)


@pytest.mark.parametrize("name, ids", [("random_decoder", PROMPT), ("random_seq2seq", SOURCE)])
def test_assisted_outputs_as_transformers(name, ids):
    kwargs = dict(max_new_tokens=7, prompt_lookup_num_tokens=3, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, output_attentions=True, output_hidden_states=True)
    if name == "random_seq2seq":
        kwargs["decoder_input_ids"] = np.array([[2, 5, 9, 12, 5, 9]])
    theirs = transformers_model(name).generate(torch.tensor(ids), **{
        k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    ours = load_model(name).generate(ids, **kwargs)
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy())
    _close(ours.scores, theirs.scores, "scores")
    _close(ours.logits, theirs.logits, "logits")
    fields = ["decoder_attentions", "cross_attentions", "decoder_hidden_states"] if name == "random_seq2seq" \
        else ["attentions", "hidden_states"]
    for field in fields:
        assert len(ours[field]) == len(theirs[field]), field
        for step, (a, b) in enumerate(zip(ours[field], theirs[field])):
            _close(a, b, f"{field}[{step}]")


@pytest.mark.parametrize("assistant", [False, True])
def test_assisted_sampling(assistant):
    model = load_model("random_decoder")
    helper = {"assistant_model": model} if assistant else {"prompt_lookup_num_tokens": 3}
    # top_k=1 leaves one token to draw: sampling is then greedy search
    np.testing.assert_array_equal(model.generate(PROMPT, max_new_tokens=8, do_sample=True, top_k=1, seed=0, **helper),
                                  model.generate(PROMPT, max_new_tokens=8))
    runs = [model.generate(PROMPT, max_new_tokens=8, do_sample=True, seed=s, **helper) for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape[1] <= PROMPT.shape[1] + 8


def test_speculative_sampling_draws_from_the_models_distribution():
    """Keep-or-resample (Leviathan et al.) leaves the first token distributed as p, whatever q."""
    rng = np.random.default_rng(0)
    p_scores = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=np.float32))
    q_scores = np.log(np.array([[0.2, 0.2, 0.6]], dtype=np.float32))
    counts = np.zeros(3)
    draws = 20000
    q = np.array([0.2, 0.2, 0.6])
    for _ in range(draws):
        guess = np.array([rng.choice(3, p=q)])
        n, token = _speculative(p_scores, q_scores, guess, rng)
        counts[int(guess[0]) if n == 1 else int(token[0])] += 1
    np.testing.assert_allclose(counts / draws, [0.5, 0.3, 0.2], atol=0.015)  # ~4 standard errors


@pytest.mark.parametrize("ids, kwargs", [
    ([[1, 2, 3, 4, 9, 2, 3]], {}),
    ([[1, 2, 3, 4, 9, 2, 3]], {"num_output_tokens": 1}),
    ([[1, 2, 3, 4, 9, 2, 3]], {"eos_token_id": 9}),
    ([[5, 6, 7, 5, 6, 7, 8, 6]], {"max_matching_ngram_size": 1}),
    ([[5, 6, 7]], {}),
    ([[1, 2, 3, 4, 9, 2, 3]], {"max_length": 8}),
])
def test_prompt_lookup_candidate_generator_as_transformers(ids, kwargs):
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator as Theirs

    kwargs = {"eos_token_id": 99, **kwargs}  # transformers' generator needs an eos id
    their_kwargs = {**kwargs, "eos_token_id": torch.tensor([kwargs["eos_token_id"]])}
    theirs, none = Theirs(**their_kwargs).get_candidates(torch.tensor(ids))
    ours, also_none = PromptLookupCandidateGenerator(**kwargs).get_candidates(np.array(ids))
    assert none is None and also_none is None
    np.testing.assert_array_equal(ours, theirs.numpy())
    with pytest.raises(ValueError, match="num_output_tokens=0"):
        PromptLookupCandidateGenerator(num_output_tokens=0)
