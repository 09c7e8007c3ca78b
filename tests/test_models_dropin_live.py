"""Model surface details transformers' own tests reach for (issue 33), compared live:
config.model_type set on a config is ignored (the class decides), set_input_embeddings
takes any table, forward's signature starts with input_ids, the output embeddings'
bias, vocab_size after resizing, _tied_weights_keys, and the tied embedding's name in
named_parameters() (RoBERTa decoders loaded from a checkpoint listed lm_head first)."""
import inspect

import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb
from minibertgen.backend import to_numpy

torch = require_module("torch")
T = require_module("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
FAMILIES = {"bert-generation": (T.BertGenerationConfig, T.BertGenerationDecoder, mb.BertGenerationDecoder),
            "bert": (T.BertConfig, T.BertLMHeadModel, mb.BertLMHeadModel),
            "roberta": (T.RobertaConfig, T.RobertaForCausalLM, mb.RobertaForCausalLM)}
IDS = np.array([[2, 5, 7, 9, 3, 11], [4, 4, 6, 8, 5, 13]])


def saved(theirs, path):
    theirs.eval().save_pretrained(path)
    return path


@pytest.mark.parametrize("cls", ["BertGenerationEncoder", "BertGenerationDecoder"])
def test_model_type_set_on_a_config_is_ignored(tmp_path, cls):
    torch.manual_seed(0)
    config = T.BertGenerationConfig(**SMALL, is_decoder=cls.endswith("Decoder"))
    theirs = getattr(T, cls)(config)
    saved(theirs, tmp_path)
    theirs.config.model_type = "bert"  # transformers' test_model_as_bert: the class decides
    ours_config = mb.BertGenerationConfig.from_pretrained(tmp_path)
    ours_config.model_type = "bert"
    ours = getattr(mb, cls).from_pretrained(tmp_path, config=ours_config)
    expected = theirs(input_ids=torch.tensor(IDS))[0].detach().numpy()
    np.testing.assert_allclose(to_numpy(ours(input_ids=IDS)[0]), expected, atol=1e-5)
    assert ours_config.model_type == "bert-generation"
    assert ours_config.to_dict()["model_type"] == theirs.config.to_dict()["model_type"] == "bert-generation"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_surface_details_as_transformers(tmp_path, family):
    config_class, their_class, our_class = FAMILIES[family]
    torch.manual_seed(0)
    pad = {"pad_token_id": 1} if family == "roberta" else {}
    theirs = their_class(config_class(**SMALL, **pad, is_decoder=True))
    ours = our_class.from_pretrained(saved(theirs, tmp_path))
    assert our_class._tied_weights_keys == their_class._tied_weights_keys
    for cls in (our_class, mb.EncoderDecoderModel, mb.BertGenerationEncoder):
        first = list(inspect.signature(cls.forward).parameters)[1]
        assert first == cls.main_input_name == "input_ids"
    head, their_head = ours.get_output_embeddings(), theirs.get_output_embeddings()
    np.testing.assert_array_equal(to_numpy(head.bias), their_head.bias.detach().numpy())
    assert head.bias is ours.params["lm_head"]["bias"]  # the head's bias itself, as transformers ties it
    # named_parameters: the same names, the tied table named after the body's embeddings
    # (the order of a loaded model follows its checkpoint, alphabetical, not torch's module order)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in theirs.named_parameters()}

    ours.resize_token_embeddings(SMALL["vocab_size"] + 10)
    theirs.resize_token_embeddings(SMALL["vocab_size"] + 10)
    assert ours.vocab_size == ours.config.vocab_size == theirs.vocab_size == theirs.config.vocab_size == 50
    assert ours.get_output_embeddings().bias.shape == tuple(theirs.get_output_embeddings().bias.shape)

    table = np.random.default_rng(0).standard_normal((10, 10)).astype(np.float32)  # any shape, as transformers
    ours.set_input_embeddings(table)
    theirs.set_input_embeddings(torch.nn.Embedding(10, 10))
    assert ours.get_input_embeddings() == table and ours.get_input_embeddings().weight.shape == (10, 10)
    with pytest.raises(AttributeError, match="no bias"):
        ours.get_input_embeddings().bias  # noqa: B018 (nn.Embedding has none)


@pytest.mark.parametrize("family", ["roberta", "bert", "bert-generation"])
def test_named_parameters_of_a_seq2seq_model_as_transformers(tmp_path, family):
    config_class = FAMILIES[family][0]
    pad = {"pad_token_id": 1} if family == "roberta" else {}
    torch.manual_seed(0)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        config_class(**SMALL, **pad), config_class(**SMALL, **pad, is_decoder=True, add_cross_attention=True),
        decoder_start_token_id=0, pad_token_id=1)
    theirs = T.EncoderDecoderModel(config=config)
    ours = mb.EncoderDecoderModel.from_pretrained(saved(theirs, tmp_path))
    names = {n for n, _ in ours.named_parameters()}
    assert names == {n for n, _ in theirs.named_parameters()}
    prefix = {"bert-generation": "bert", "bert": "bert", "roberta": "roberta"}[family]
    assert f"decoder.{prefix}.embeddings.word_embeddings.weight" in names
