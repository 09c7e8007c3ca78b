"""BertModel / RobertaModel with and without a pooler (add_pooling_layer), live against transformers 4.57.

transformers' ``BertModel(config, add_pooling_layer=False)`` and
``from_pretrained(path, add_pooling_layer=False)`` have no pooler weights and return
pooler_output None.  A checkpoint without pooler weights loaded into a model with a pooler gets a
random pooler in transformers; minibertgen refuses that (its pooler_output could not match) and
asks for add_pooling_layer=False.
"""
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import require_module
from minibertgen.checkpoint.files import load_state_dict

TOL = 1e-4
SMALL = dict(vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
             max_position_embeddings=24)
CLASSES = [("BertModel", "BertConfig", 0), ("RobertaModel", "RobertaConfig", 1)]


@pytest.fixture(scope="module")
def hf():
    require_module("torch")
    return require_module("transformers")


def spread(model, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            param.copy_(base + (0.2 if param.ndim == 1 else 0.25) * torch.randn(param.shape, generator=gen))
    return model.eval()


def inputs(pad):
    rng = np.random.default_rng(4)
    ids = rng.integers(3, SMALL["vocab_size"], size=(3, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = mask[2, 3:] = 0
    ids[mask == 0] = pad
    return ids, mask, rng.integers(0, 2, size=ids.shape)


def run_both(theirs, ours, pad):
    import torch

    ids, mask, types = inputs(pad)
    with torch.no_grad():
        ref = theirs(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     token_type_ids=torch.from_numpy(types))
    out = ours(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return ref, out


def keys(directory):
    return set(load_state_dict(directory))


@pytest.mark.parametrize("cls, config_cls, pad", CLASSES)
def test_a_checkpoint_without_pooler(hf, tmp_path, cls, config_cls, pad):
    config = getattr(hf, config_cls)(**SMALL, pad_token_id=pad, type_vocab_size=2)
    theirs = spread(getattr(hf, cls)(config, add_pooling_layer=False), 3)
    theirs.save_pretrained(tmp_path / "theirs")
    assert not any("pooler" in k for k in keys(tmp_path / "theirs"))

    ours, info = getattr(mb, cls).from_pretrained(tmp_path / "theirs", add_pooling_layer=False,
                                                  output_loading_info=True)
    ref, out = run_both(theirs, ours, pad)
    assert float(np.abs(out.last_hidden_state - ref.last_hidden_state.numpy()).max()) <= TOL
    assert ref.pooler_output is None and out.pooler_output is None
    assert "pooler" not in ours.params and info["missing_keys"] == [] and info["unexpected_keys"] == []

    ours.save_pretrained(tmp_path / "ours")
    assert keys(tmp_path / "ours") == keys(tmp_path / "theirs")  # no pooler written, as transformers
    again = getattr(hf, cls).from_pretrained(tmp_path / "ours", add_pooling_layer=False).eval()
    ref_again, _ = run_both(again, ours, pad)
    assert float(np.abs(out.last_hidden_state - ref_again.last_hidden_state.numpy()).max()) <= TOL

    # With a pooler (the default), transformers would initialise it randomly: refused, saying what to do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, their_info = getattr(hf, cls).from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert sorted(their_info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]
    with pytest.raises(ValueError, match=r"has no pooler.dense.weight, pooler.dense.bias, and "
                                         rf"{cls} has a pooler.*{cls}.from_pretrained\(\.\.\., "
                                         r"add_pooling_layer=False\)"):
        getattr(mb, cls).from_pretrained(tmp_path / "theirs")


@pytest.mark.parametrize("cls, config_cls, pad", CLASSES)
def test_a_checkpoint_with_pooler_loaded_without(hf, tmp_path, cls, config_cls, pad):
    config = getattr(hf, config_cls)(**SMALL, pad_token_id=pad, type_vocab_size=2)
    spread(getattr(hf, cls)(config), 5).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, their_info = getattr(hf, cls).from_pretrained(tmp_path, add_pooling_layer=False,
                                                              output_loading_info=True)
        ours, info = getattr(mb, cls).from_pretrained(tmp_path, add_pooling_layer=False, output_loading_info=True)
    assert sorted(info["unexpected_keys"]) == sorted(their_info["unexpected_keys"]) == [
        "pooler.dense.bias", "pooler.dense.weight"]
    ref, out = run_both(theirs.eval(), ours, pad)
    assert float(np.abs(out.last_hidden_state - ref.last_hidden_state.numpy()).max()) <= TOL
    assert ref.pooler_output is None and out.pooler_output is None
    pooled = getattr(mb, cls).from_pretrained(tmp_path)  # the default keeps it, as transformers
    ref_pooled, out_pooled = run_both(spread(getattr(hf, cls)(config), 5), pooled, pad)
    assert float(np.abs(out_pooled.pooler_output - ref_pooled.pooler_output.numpy()).max()) <= TOL


@pytest.mark.parametrize("cls, config_cls, pad", CLASSES)
def test_constructor_without_pooler_saves_transformers_keys(hf, tmp_path, cls, config_cls, pad):
    kwargs = dict(**SMALL, pad_token_id=pad, type_vocab_size=2)
    getattr(hf, cls)(getattr(hf, config_cls)(**kwargs), add_pooling_layer=False).save_pretrained(tmp_path / "theirs")
    for label, ours in (("keyword", getattr(mb, cls)(getattr(mb, config_cls)(**kwargs), add_pooling_layer=False)),
                        ("positional", getattr(mb, cls)(getattr(mb, config_cls)(**kwargs), False))):
        assert "pooler" not in ours.params and not ours.has_pooler, label
        ids, mask, _ = inputs(pad)
        assert ours(input_ids=ids, attention_mask=mask).pooler_output is None, label
        ours.save_pretrained(tmp_path / label)
        assert keys(tmp_path / label) == keys(tmp_path / "theirs"), label
        # transformers loads it, without missing or unexpected weights, to the same states
        theirs, info = getattr(hf, cls).from_pretrained(tmp_path / label, add_pooling_layer=False,
                                                        output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], label
        ref, out = run_both(theirs.eval(), ours, pad)
        assert float(np.abs(out.last_hidden_state - ref.last_hidden_state.numpy()).max()) <= TOL, label
    pooled = getattr(mb, cls)(getattr(mb, config_cls)(**kwargs))
    assert pooled.has_pooler and "pooler" in pooled.params


def test_encoder_decoder_with_a_pooler_less_encoder(hf, tmp_path):
    """from_encoder_decoder_pretrained(..., encoder_add_pooling_layer=False): the encoder has no
    pooler in either library, and the saved keys are transformers'."""
    import torch

    spread(hf.BertModel(hf.BertConfig(**SMALL, type_vocab_size=2)), 7).save_pretrained(tmp_path / "bert")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(tmp_path / "bert"), str(tmp_path / "bert"), encoder_add_pooling_layer=False)
        ours = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(
            tmp_path / "bert", tmp_path / "bert", encoder_add_pooling_layer=False)
    theirs.save_pretrained(tmp_path / "theirs")
    ours.save_pretrained(tmp_path / "ours")
    assert keys(tmp_path / "ours") == keys(tmp_path / "theirs")
    assert not any(k.startswith("encoder.pooler.") for k in keys(tmp_path / "ours"))
    # Loaded from transformers' file, minibertgen computes transformers' logits.  Its EncoderDecoderModel
    # builds the encoder with a pooler (AutoModel's default) and initialises it, warning as transformers
    # does; no output of an EncoderDecoderModel reads it.
    with pytest.warns(UserWarning, match=r"newly initialised \(not in the checkpoint\): encoder.pooler.dense"):
        loaded = mb.EncoderDecoderModel.from_pretrained(tmp_path / "theirs")
    ids, mask, _ = inputs(0)
    with torch.no_grad():
        ref = theirs.eval()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                            decoder_input_ids=torch.from_numpy(ids[:, :4])).logits.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = loaded(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).logits
    assert float(np.abs(logits - ref).max()) <= TOL


def test_add_pooling_layer_errors():
    config = mb.BertConfig(**SMALL)
    with pytest.raises(TypeError, match=r"add_pooling_layer='no': expected True or False"):
        mb.BertModel(config, add_pooling_layer="no")
    with pytest.raises(TypeError, match=r"got add_pooling_layer twice \(False and True\)"):
        mb.BertModel(config, False, add_pooling_layer=True)
    pooled = mb.BertModel(config, seed=0)
    with pytest.raises(ValueError, match=r"add_pooling_layer=False, but the given params holds pooler weights: "
                                         r"expected add_pooling_layer=True"):
        mb.BertModel(config, pooled.params, add_pooling_layer=False)
    bare = mb.BertModel(config, add_pooling_layer=False, seed=0)
    with pytest.raises(ValueError, match=r"add_pooling_layer=True, but the given params has no pooler weights"):
        mb.BertModel(config, bare.params, add_pooling_layer=True)
    assert not mb.BertModel(config, bare.params).has_pooler  # given weights without one: none


def test_add_pooling_layer_errors_in_from_pretrained(tmp_path):
    mb.BertModel(mb.BertConfig(**SMALL), seed=0).save_pretrained(tmp_path)
    with pytest.raises(TypeError, match=r"add_pooling_layer=1: expected True or False"):
        mb.BertModel.from_pretrained(tmp_path, add_pooling_layer=1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): add_pooling_layer"):
        mb.BertLMHeadModel.from_pretrained(tmp_path, add_pooling_layer=False)  # transformers: a TypeError too
