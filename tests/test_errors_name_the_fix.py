"""Errors that end in the fix (issue 33): transformers spellings minibertgen takes
differently, a single model given to EncoderDecoderModel.from_pretrained, token types
for a BertGeneration half, ids beyond the vocabulary, and mistyped keywords (the closest
known name, by difflib)."""
import numpy as np
import pytest

import minibertgen as mb
from minibertgen.suggest import closest, unexpected_keywords

SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20)
VOCAB = "tests/fixtures/tokenizers/minilm_vocab.txt"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    mb.BertModel(mb.BertConfig(**SMALL), seed=0).save_pretrained(base / "bert")
    mb.BertGenerationDecoder(mb.BertGenerationConfig(**SMALL, is_decoder=True), seed=0).save_pretrained(base / "dec")
    return base


@pytest.mark.parametrize("kwargs, fix", [
    ({"device_map": "auto"}, "device='cpu'"),
    ({"load_in_4bit": True}, r"quantization_config=BitsAndBytesConfig\(load_in_4bit=True\)"),
    ({"load_in_8bit": True}, r"quantization_config=BitsAndBytesConfig\(load_in_8bit=True\)"),
    ({"dtyp": "float16"}, "did you mean 'dtype'"),
    ({"output_loadinginfo": True}, "did you mean 'output_loading_info'"),
])
def test_from_pretrained_keywords(saved, kwargs, fix):
    with pytest.raises(TypeError, match=fix):
        mb.BertModel.from_pretrained(saved / "bert", **kwargs)


@pytest.mark.filterwarnings("ignore:BertLMHeadModel.from_pretrained")
def test_encoder_decoder_from_a_single_model(saved):
    with pytest.raises(ValueError, match=r"from_encoder_decoder_pretrained\("):
        mb.EncoderDecoderModel.from_pretrained(saved / "bert")
    model = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(saved / "bert", saved / "bert")
    assert model.config.decoder.add_cross_attention  # the suggested call works


def test_token_types_for_bert_generation_say_how_to_drop_them(saved):
    model = mb.BertGenerationDecoder.from_pretrained(saved / "dec")
    with pytest.raises(ValueError, match="return_token_type_ids=False"):
        model.generate(input_ids=np.array([[1, 2]]), token_type_ids=np.array([[0, 0]]), max_new_tokens=2)


def test_ids_beyond_the_vocabulary_say_the_tokenizer_does_not_match(saved):
    model = mb.BertGenerationDecoder.from_pretrained(saved / "dec")
    tokenizer = mb.BertTokenizer(VOCAB)  # 30k entries, the model has 30
    with pytest.raises(ValueError, match="tokenizer and the model do not match"):
        model(**tokenizer("hello world", return_tensors="np", return_token_type_ids=False))
    with pytest.raises(ValueError, match="tokenizer and the model do not match"):
        model.generate(np.array([[1, 99]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"contains id -5: expected ids in \[0, 30\)$"):
        model(input_ids=np.array([[1, -5]]))  # a negative id is not a tokenizer mismatch


@pytest.mark.parametrize("call, fix", [
    (lambda m: m(input_ids=np.array([[1, 2]]), atention_mask=np.array([[1, 1]])), "did you mean 'attention_mask'"),
    (lambda m: m(input_ids=np.array([[1, 2]]), output_hidden_state=True), "did you mean 'output_hidden_states'"),
    (lambda m: m.generate(np.array([[1, 2]]), max_new_token=2), "did you mean 'max_new_tokens'"),
    (lambda m: m.generate(np.array([[1, 2]]), num_beam=2), "did you mean 'num_beams'"),
    (lambda m: m.generate(np.array([[1, 2]]), zzz=2), r"argument\(s\): zzz \(neither"),  # nothing close
])
def test_model_keyword_typos(saved, call, fix):
    with pytest.raises(TypeError, match=fix):
        call(mb.BertGenerationDecoder.from_pretrained(saved / "dec"))


def test_tokenizer_keyword_typos():
    tokenizer = mb.BertTokenizer(VOCAB)
    with pytest.raises(TypeError, match="did you mean 'padding'"):
        tokenizer("hello", paddin=True)
    with pytest.raises(TypeError, match="did you mean 'return_tensors'"):
        tokenizer("hello", return_tensor="np")


def test_suggestions_helper():
    assert closest("atention_mask", ["attention_mask", "input_ids"]) == "attention_mask"
    assert closest("x", ["attention_mask"]) is None
    message = unexpected_keywords("f()", ["device_map", "inptu_ids"], ["input_ids"])
    assert "device=" in message and "did you mean 'input_ids'" in message
