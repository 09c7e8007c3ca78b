"""BERT-family halves live against transformers 4.57 (the `reference` extra; CI makes a skip a failure).

Every pairing of {bert-generation, bert, roberta} with other seeds than the recorded
fixtures, shared weights, the warm-starting recipe on real MiniLM weights and on a RoBERTa
checkpoint, MiniLM as a BertModel (pooler included), and our saves loaded by transformers.
"""
import warnings

import numpy as np
import pytest

import minibertgen as mb
from conftest import require_module

TOL = 1e-4
FAMILIES = ("bert-generation", "bert", "roberta")
PAD = {"bert-generation": 0, "bert": 0, "roberta": 1}
SMALL = dict(vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
             max_position_embeddings=24)


@pytest.fixture(scope="module")
def hf():
    require_module("torch")
    return require_module("transformers")


def tt(x):
    import torch

    return None if x is None else torch.from_numpy(np.asarray(x))


def diff(ours, theirs):
    return float(np.abs(np.asarray(ours, dtype=np.float32) - theirs.detach().float().numpy()).max())


def spread(model, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            base = 1.0 if name.endswith(("LayerNorm.weight", "layer_norm.weight")) else 0.0
            param.copy_(base + (0.2 if param.ndim == 1 else 0.25) * torch.randn(param.shape, generator=gen))
    return model.eval()


def hf_config(hf, family, **overrides):
    cls = {"bert-generation": hf.BertGenerationConfig, "bert": hf.BertConfig, "roberta": hf.RobertaConfig}[family]
    extra = {"pad_token_id": PAD[family]}
    if family == "bert":
        extra["type_vocab_size"] = 3
    return cls(**{**SMALL, **extra, **overrides})


def padded(rng, batch, seq, pad):
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(3, SMALL["vocab_size"], size=(batch, seq))
    ids[mask == 0] = pad
    return ids, mask


def random_pair(hf, enc, dec, seed, tie=False, **dec_overrides):
    config = hf.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_config(hf, enc), hf_config(hf, dec, is_decoder=True, add_cross_attention=True, **dec_overrides),
        tie_encoder_decoder=tie)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, PAD[dec], 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = spread(hf.EncoderDecoderModel(config=config), seed)
        if tie:
            model.tie_weights()
    return model


PAIRINGS = [(e, d, False) for e in FAMILIES for d in FAMILIES] + [("bert", "bert", True), ("roberta", "roberta", True)]


@pytest.mark.parametrize("enc, dec, tie", PAIRINGS)
def test_pairing_matches_transformers(hf, tmp_path, enc, dec, tie):
    import torch

    seed = 100 + 7 * FAMILIES.index(enc) + FAMILIES.index(dec) + 50 * tie
    model = random_pair(hf, enc, dec, seed, tie)
    model.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    rng = np.random.default_rng(seed)
    src, src_mask = padded(rng, 3, 9, PAD[enc])
    tgt, tgt_mask = padded(rng, 3, 6, PAD[dec])
    labels = np.where(tgt_mask == 1, tgt, -100)
    types = None if enc == "bert-generation" else (
        rng.integers(0, 3, size=src.shape) if enc == "bert" else np.zeros_like(src))
    for given in (None, types):
        extra = {} if given is None else {"token_type_ids": given}
        with torch.no_grad():
            ref = model(input_ids=tt(src), attention_mask=tt(src_mask), decoder_input_ids=tt(tgt),
                        decoder_attention_mask=tt(tgt_mask), labels=tt(labels), use_cache=False,
                        **{k: tt(v) for k, v in extra.items()})
        out = ours(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask,
                   labels=labels, **extra)
        assert diff(out.logits, ref.logits) <= TOL
        assert abs(float(out.loss) - float(ref.loss)) <= TOL
    for beams in (1, 3):
        with torch.no_grad():
            ref_ids = model.generate(tt(src), attention_mask=tt(src_mask), max_new_tokens=5, num_beams=beams,
                                     do_sample=False)
        ids = ours.generate(src, attention_mask=src_mask, max_new_tokens=5, num_beams=beams)
        np.testing.assert_array_equal(np.asarray(ids), ref_ids.numpy())
    if types is None:  # a BertGeneration encoder has no token types: transformers' generate refuses them too
        kinds = np.zeros_like(src)
        with warnings.catch_warnings(), pytest.raises(ValueError, match="token_type_ids"):
            warnings.simplefilter("ignore")
            model.generate(tt(src), attention_mask=tt(src_mask), token_type_ids=tt(kinds), max_new_tokens=5)
        with pytest.raises(ValueError, match="token_type_ids.*bert-generation"):
            ours.generate(src, attention_mask=src_mask, token_type_ids=kinds, max_new_tokens=5)
        return
    for beams in (1, 3):  # token types reach the encoder (and only it), as in transformers
        with torch.no_grad():
            ref_ids = model.generate(tt(src), attention_mask=tt(src_mask), token_type_ids=tt(types), max_new_tokens=5,
                                     num_beams=beams, do_sample=False)
        ids = ours.generate(src, attention_mask=src_mask, token_type_ids=types, max_new_tokens=5, num_beams=beams)
        np.testing.assert_array_equal(np.asarray(ids), ref_ids.numpy())


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_halves_with_a_deeper_encoder_as_transformers(hf, tmp_path, family):
    """tie_encoder_decoder with 3 encoder layers over 2 decoder layers: transformers ties the
    first two and keeps the third (warning "not tied").  (A deeper decoder, which transformers
    cannot build, is refused: test_bert_family.py's test_refused_configs_name_the_field.)"""
    import torch

    config = hf.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_config(hf, family, num_hidden_layers=3),
        hf_config(hf, family, num_hidden_layers=2, is_decoder=True, add_cross_attention=True),
        tie_encoder_decoder=True, decoder_start_token_id=2, pad_token_id=PAD[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = spread(hf.EncoderDecoderModel(config=config), 23)
        model.tie_weights()
    model.save_pretrained(tmp_path / "theirs")
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path / "theirs")
    enc, dec = ours.encoder.params["encoder"]["layer"], ours.decoder.params["bert"]["encoder"]["layer"]
    assert all(enc[i]["attention"]["self"]["query"]["weight"] is dec[i]["attention"]["self"]["query"]["weight"]
               for i in range(2))
    assert not np.array_equal(enc[2]["attention"]["self"]["query"]["weight"], enc[1]["attention"]["self"]["query"]["weight"])
    rng = np.random.default_rng(23)
    src, src_mask = padded(rng, 2, 7, PAD[family])
    tgt = rng.integers(3, SMALL["vocab_size"], size=(2, 4))
    with torch.no_grad():
        ref = model(input_ids=tt(src), attention_mask=tt(src_mask), decoder_input_ids=tt(tgt), use_cache=False)
        ref_ids = model.generate(tt(src), attention_mask=tt(src_mask), max_new_tokens=5, num_beams=2)
    assert diff(ours(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits, ref.logits) <= TOL
    np.testing.assert_array_equal(np.asarray(ours.generate(src, attention_mask=src_mask, max_new_tokens=5, num_beams=2)),
                                  ref_ids.numpy())
    ours.save_pretrained(tmp_path / "ours")  # the untied third layer is written, the tied ones once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = hf.EncoderDecoderModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert diff(ours(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits,
                    again(input_ids=tt(src), attention_mask=tt(src_mask), decoder_input_ids=tt(tgt),
                          use_cache=False).logits) <= TOL


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_decoder_alone_generates_with_token_types_as_transformers(hf, tmp_path, family):
    """A BERT / RoBERTa LM alone: the prompt's token types, then each new token with its row's
    last type (transformers extends token_type_ids that way), with and without the cache."""
    import torch

    cls = {"bert": hf.BertLMHeadModel, "roberta": hf.RobertaForCausalLM}[family]
    config = hf_config(hf, family, is_decoder=True, type_vocab_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = spread(cls(config), 11)
    theirs.save_pretrained(tmp_path)
    ours = {"bert": mb.BertLMHeadModel, "roberta": mb.RobertaForCausalLM}[family].from_pretrained(tmp_path)
    rng = np.random.default_rng(11)
    prompt = rng.integers(3, SMALL["vocab_size"], size=(2, 5))
    types = np.array([[0, 0, 1, 1, 2], [1, 1, 1, 0, 0]])
    for settings in ({}, {"num_beams": 3}, {"use_cache": False}, {"num_beams": 2, "use_cache": False}):
        with torch.no_grad():
            ref = theirs.generate(tt(prompt), token_type_ids=tt(types), max_new_tokens=6, **settings).numpy()
            plain = theirs.generate(tt(prompt), max_new_tokens=6, **settings).numpy()
        got = np.asarray(ours.generate(prompt, token_type_ids=types, max_new_tokens=6, **settings))
        np.testing.assert_array_equal(got, ref, err_msg=str(settings))
        assert not np.array_equal(ref, plain), "the token types should change these ids (else the test is blind)"


@pytest.mark.parametrize("enc, dec, tie", [("roberta", "bert", False), ("bert", "bert", True),
                                           ("bert-generation", "roberta", False)])
def test_our_save_loads_in_transformers(hf, tmp_path, enc, dec, tie):
    import torch

    ours = mb.EncoderDecoderModel.from_pretrained(_saved(hf, tmp_path / "theirs", enc, dec, tie))
    ours.save_pretrained(tmp_path / "ours")
    theirs = hf.EncoderDecoderModel.from_pretrained(tmp_path / "ours").eval()
    assert type(theirs.encoder).__name__ == type(ours.encoder).__name__
    assert type(theirs.decoder).__name__ == type(ours.decoder).__name__
    src, mask = padded(np.random.default_rng(1), 2, 7, PAD[enc])
    with torch.no_grad():
        ref = theirs(input_ids=tt(src), attention_mask=tt(mask), decoder_input_ids=tt(src[:, :4]), use_cache=False)
    out = ours(input_ids=src, attention_mask=mask, decoder_input_ids=src[:, :4])
    assert diff(out.logits, ref.logits) <= TOL


def _saved(hf, directory, enc, dec, tie):
    random_pair(hf, enc, dec, 7, tie).save_pretrained(directory)
    return directory


def test_chunked_feed_forward_as_transformers(hf, tmp_path):
    """chunk_size_feed_forward splits the feed-forward over positions: the same numbers for a
    length that is a multiple of it; transformers refuses other lengths, and so do we."""
    import torch

    model = random_pair(hf, "bert", "bert", 3, chunk_size_feed_forward=2)
    model.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    src, mask = padded(np.random.default_rng(2), 2, 8, 0)
    with torch.no_grad():
        ref = model(input_ids=tt(src), attention_mask=tt(mask), decoder_input_ids=tt(src), use_cache=False)
    assert diff(ours(input_ids=src, attention_mask=mask, decoder_input_ids=src).logits, ref.logits) <= TOL
    with pytest.raises(ValueError, match="multiple of the chunk size 2"), torch.no_grad():
        model(input_ids=tt(src), attention_mask=tt(mask), decoder_input_ids=tt(src[:, :7]), use_cache=False)
    with pytest.raises(ValueError, match="sequence length 7 is not a multiple of chunk_size_feed_forward=2"):
        ours(input_ids=src, attention_mask=mask, decoder_input_ids=src[:, :7])


def test_minilm_as_bert_model_with_pooler(hf, minilm_dir):
    import torch

    tokenizer = hf.BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(["The quick brown fox jumps over the lazy dog.", "Hello world!"], ["A pair.", "Second one"],
                      padding=True, return_tensors="np")
    assert batch["token_type_ids"].any()  # sentence pairs: both token types occur
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.BertModel.from_pretrained(minilm_dir).eval()
    ours = mb.BertModel.from_pretrained(minilm_dir)
    with torch.no_grad():
        ref = theirs(**{k: tt(v) for k, v in batch.items()})
    out = ours(**batch)
    assert diff(out.last_hidden_state, ref.last_hidden_state) <= TOL
    assert diff(out.pooler_output, ref.pooler_output) <= TOL


def _copy_new_weights(ours, theirs, pooled=True):
    """Give our warm-started model the weights transformers initialised afresh (cross-attention,
    and a head the checkpoint lacks), checking that every other weight is the checkpoint's in both."""
    from minibertgen.checkpoint.mapping import tree_name

    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    state.pop("decoder.cls.predictions.decoder.bias", None)  # an alias of cls.predictions.bias
    state.pop("decoder.lm_head.decoder.bias", None)  # an alias of lm_head.bias
    ours_flat = ours.state_dict()
    assert set(ours_flat) == set(state)
    family = ours.decoder.config.model_type
    for name, array in state.items():
        fresh = name.startswith("decoder.") and (".crossattention." in name or not name.startswith(
            ("decoder.bert.", "decoder.roberta.")))
        fresh = fresh or (name.startswith("encoder.pooler.") and not pooled)
        if not fresh:
            np.testing.assert_array_equal(np.asarray(ours_flat[name]), array, err_msg=name)
            continue
        if name.endswith("decoder.weight"):  # the head tied to the word embeddings
            continue
        if name.startswith("encoder."):
            path, node = name[len("encoder."):], ours.encoder.params
        else:
            path = tree_name(name[len("decoder."):], family, True)
            node = ours.decoder.params if path.startswith("lm_head.") else ours.decoder.params["bert"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[leaf] = array.copy()


GUIDE = dict(max_length=9, min_length=3, no_repeat_ngram_size=3, early_stopping=True, length_penalty=2.0,
             num_beams=2)


def _guide_settings(config, start, eos, pad, vocab):
    """The warm-starting guide's settings, made on the model config after the model exists."""
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, eos, pad
    config.vocab_size = vocab
    for key, value in GUIDE.items():
        setattr(config, key, value)


def test_warm_starting_recipe_bert(hf, minilm_dir, tmp_path):
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.EncoderDecoderModel.from_encoder_decoder_pretrained(str(minilm_dir), str(minilm_dir)).eval()
        ours = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm_dir, minilm_dir)
    assert (type(ours.encoder).__name__, type(ours.decoder).__name__) == ("BertModel", "BertLMHeadModel")
    _copy_new_weights(ours, theirs)
    tokenizer = hf.BertTokenizer.from_pretrained(minilm_dir)
    for model in (theirs, ours):
        _guide_settings(model.config, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
                        tokenizer.vocab_size)
    batch = tokenizer(["a long article about the weather in spring", "short text"], padding=True, return_tensors="np")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs.generate(tt(batch["input_ids"]), attention_mask=tt(batch["attention_mask"]))
    with pytest.warns(UserWarning, match="rebuilt from model.config"):
        ids = ours.generate(batch["input_ids"], attention_mask=batch["attention_mask"])
    np.testing.assert_array_equal(np.asarray(ids), ref.numpy())

    # Saved by transformers after those settings, loaded by both: the same ids again.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.save_pretrained(tmp_path)
        again = hf.EncoderDecoderModel.from_pretrained(tmp_path).eval()
        with torch.no_grad():
            ref = again.generate(tt(batch["input_ids"]), attention_mask=tt(batch["attention_mask"]))
        ids = mb.EncoderDecoderModel.from_pretrained(tmp_path).generate(batch["input_ids"],
                                                                         attention_mask=batch["attention_mask"])
    np.testing.assert_array_equal(np.asarray(ids), ref.numpy())


def test_warm_starting_recipe_roberta(hf, tmp_path):
    import torch

    config = hf.RobertaConfig(**{**SMALL, "max_position_embeddings": 40}, pad_token_id=1, type_vocab_size=1)
    spread(hf.RobertaForMaskedLM(config), 5).save_pretrained(tmp_path)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.EncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path), str(tmp_path)).eval()
        ours = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path, tmp_path)
    assert (type(ours.encoder).__name__, type(ours.decoder).__name__) == ("RobertaModel", "RobertaForCausalLM")
    _copy_new_weights(ours, theirs, pooled=False)  # a masked-LM checkpoint has no pooler: new on both sides
    for model in (theirs, ours):
        _guide_settings(model.config, 0, 2, 1, SMALL["vocab_size"])
    src, mask = padded(np.random.default_rng(3), 3, 8, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs.generate(tt(src), attention_mask=tt(mask))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = ours.generate(src, attention_mask=mask)
    np.testing.assert_array_equal(np.asarray(ids), ref.numpy())


def test_bert_generation_encoder_of_a_bert_checkpoint_still_drops_token_types(hf, minilm_dir):
    """BertGenerationEncoder.from_pretrained of a BERT checkpoint keeps transformers' behaviour."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.BertGenerationEncoder.from_pretrained(minilm_dir).eval()
        ours, info = mb.BertGenerationEncoder.from_pretrained(minilm_dir, output_loading_info=True)
    assert "embeddings.token_type_embeddings.weight" in info["unexpected_keys"]
    ids = np.array([[101, 2023, 2003, 102]])
    with torch.no_grad():
        ref = theirs(input_ids=tt(ids))
    assert diff(ours(input_ids=ids, token_type_ids=np.ones_like(ids)).last_hidden_state, ref.last_hidden_state) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_ignore_mismatched_sizes_as_transformers(hf, tmp_path, family):
    """ignore_mismatched_sizes=True: weights whose stored shape differs from the config's are
    initialised afresh and listed in mismatched_keys (not missing_keys), the rest load as
    stored; without it the mismatch is an error.  Here a decoder alone and a seq2seq model."""
    import torch

    cls = {"bert-generation": (hf.BertGenerationDecoder, mb.BertGenerationDecoder),
           "bert": (hf.BertLMHeadModel, mb.BertLMHeadModel), "roberta": (hf.RobertaForCausalLM, mb.RobertaForCausalLM)}
    theirs_cls, ours_cls = cls[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spread(theirs_cls(hf_config(hf, family, is_decoder=True)), 5).save_pretrained(tmp_path / "lm")
        bigger = dict(vocab_size=SMALL["vocab_size"] + 9, max_position_embeddings=SMALL["max_position_embeddings"] + 4)
        theirs, their_info = theirs_cls.from_pretrained(tmp_path / "lm", ignore_mismatched_sizes=True,
                                                        output_loading_info=True, **bigger)
        ours, info = ours_cls.from_pretrained(tmp_path / "lm", ignore_mismatched_sizes=True, output_loading_info=True,
                                              **bigger)
    assert sorted(info["mismatched_keys"]) == sorted(their_info["mismatched_keys"]) != []
    assert info["missing_keys"] == their_info["missing_keys"] and info["unexpected_keys"] == their_info["unexpected_keys"]
    from minibertgen.checkpoint.files import load_state_dict

    stored = load_state_dict(tmp_path / "lm")
    mine = ours.state_dict()
    for name in set(stored) - set(info["mismatched_keys"]):  # every other stored weight loads as stored
        np.testing.assert_array_equal(np.asarray(mine[name]), np.asarray(stored[name]), err_msg=name)
    with pytest.raises(ValueError, match="has shape"):
        ours_cls.from_pretrained(tmp_path / "lm", **bigger)

    random_pair(hf, family, family, 6).save_pretrained(tmp_path / "pair")
    config = hf.EncoderDecoderConfig.from_pretrained(tmp_path / "pair")
    config.decoder.vocab_size += 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, their_info = hf.EncoderDecoderModel.from_pretrained(tmp_path / "pair", config=config,
                                                               ignore_mismatched_sizes=True, output_loading_info=True)
        _, info = mb.EncoderDecoderModel.from_pretrained(
            tmp_path / "pair", config=mb.EncoderDecoderConfig.from_dict(config.to_dict()), ignore_mismatched_sizes=True,
            output_loading_info=True)
    assert sorted(info["mismatched_keys"]) == sorted(their_info["mismatched_keys"]) != []
    del torch


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tie, position, tied_head", [(False, "absolute", True), (True, "relative_key", True),
                                                      (False, "relative_key_query", False)])
def test_num_parameters_as_transformers(hf, tmp_path, family, tie, position, tied_head):
    config = hf.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_config(hf, family, position_embedding_type=position),
        hf_config(hf, family, position_embedding_type=position, is_decoder=True, add_cross_attention=True,
                  tie_word_embeddings=tied_head),
        tie_encoder_decoder=tie, decoder_start_token_id=2, pad_token_id=PAD[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.EncoderDecoderModel(config=config)
    theirs.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    for options in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        for mine, reference in ((ours, theirs), (ours.encoder, theirs.encoder), (ours.decoder, theirs.decoder)):
            assert mine.num_parameters(**options) == reference.num_parameters(**options), (options, type(mine))


@pytest.mark.parametrize("family", FAMILIES)
def test_half_then_float_as_transformers(hf, tmp_path, family):
    """model.half().float(): the weights rounded to float16, then computed in float32, as torch's."""
    import torch

    model = random_pair(hf, family, family, 31)
    model.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path).half().float()
    model = model.half().float()
    src, mask = padded(np.random.default_rng(31), 2, 6, PAD[family])
    with torch.no_grad():
        ref = model(input_ids=tt(src), attention_mask=tt(mask), decoder_input_ids=tt(src[:, :3]), use_cache=False)
    assert diff(ours(input_ids=src, attention_mask=mask, decoder_input_ids=src[:, :3]).logits, ref.logits) <= TOL


def test_return_dict_false_matches_transformers_tuple(hf, tmp_path):
    import torch

    model = random_pair(hf, "bert", "roberta", 9)
    model.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    src, mask = padded(np.random.default_rng(4), 2, 6, 0)
    tgt = src[:, :4] + 1
    with torch.no_grad():
        ref = model(input_ids=tt(src), attention_mask=tt(mask), decoder_input_ids=tt(tgt), labels=tt(tgt),
                    return_dict=False)
    out = ours(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, labels=tgt, return_dict=False)
    assert len(out) == len(ref)
    for mine, theirs in zip(out, ref):
        if torch.is_tensor(theirs):
            assert diff(mine, theirs) <= TOL
        else:  # the cache
            assert isinstance(mine, mb.EncoderDecoderCache) and len(mine) == len(theirs)


def test_resize_token_embeddings_as_transformers(hf):
    """transformers' mean_resizing draws new rows around the old rows' mean (covariance x 1e-9)."""
    import torch

    torch.manual_seed(0)
    theirs = spread(hf.BertLMHeadModel(hf_config(hf, "bert", is_decoder=True)), 11)
    ours = mb.BertLMHeadModel.from_pretrained(None, config=mb.BertConfig(**theirs.config.to_dict()),
                                              state_dict=theirs.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.resize_token_embeddings(70)
    ours.resize_token_embeddings(70)
    assert diff(ours.get_input_embeddings().weight, theirs.get_input_embeddings().weight) <= TOL
    assert diff(ours.params["lm_head"]["bias"], theirs.cls.predictions.bias) <= TOL
    # The new rows are a random draw in transformers (N(mean, 1e-9 x covariance)): equal to ours
    # within 1e-4 as rows, but through a LayerNorm and the tied head they move logits ~1e-4, so
    # logits are compared for the old tokens and vocabulary (which the resize must not change).
    ids = np.array([[3, 20, 60]])
    with torch.no_grad():
        ref = theirs(input_ids=tt(ids)).logits[..., :61]
    assert diff(ours(input_ids=ids).logits[..., :61], ref) <= TOL


@pytest.mark.parametrize("enc, dec", [("roberta", "roberta"), ("bert", "roberta"), ("roberta", "bert")])
def test_pipeline_and_cli_match_transformers(hf, tmp_path, enc, dec):
    """The text2text-generation pipeline and `minibertgen run` on BERT / RoBERTa halves print
    transformers' pipeline text (a byte-level BPE RobertaTokenizer shared by both halves)."""
    import io
    import json
    import shutil

    from conftest import FIXTURES
    from minibertgen.cli import main as cli_main

    vocab = len(json.loads((FIXTURES / "tokenizers" / "bytelevel_bpe" / "vocab.json").read_text()))
    sizes = {**SMALL, "vocab_size": vocab, "max_position_embeddings": 64, "pad_token_id": 1}
    halves = [{"bert-generation": hf.BertGenerationConfig, "bert": hf.BertConfig, "roberta": hf.RobertaConfig}[f](
        **sizes, **extra) for f, extra in ((enc, {}), (dec, dict(is_decoder=True, add_cross_attention=True)))]
    config = hf.EncoderDecoderConfig.from_encoder_decoder_configs(*halves)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spread(hf.EncoderDecoderModel(config=config), 11).save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "tokenizers" / "bytelevel_bpe" / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    texts = ["Plants create energy through ", "Hello world"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generator = hf.pipeline(task="text2text-generation", model=str(tmp_path))
        reference = generator(texts, max_new_tokens=8)
        # `minibertgen run` reads stdin lines with their newline, as `transformers run` does
        lines = generator([text + "\n" for text in texts], max_new_tokens=8)
    ours = mb.pipeline(task="text2text-generation", model=str(tmp_path))(texts, max_new_tokens=8)
    assert ours == reference
    out = io.StringIO()
    code = cli_main(["run", "--task", "text2text-generation", "--model", str(tmp_path), "--max-new-tokens", "8",
                     "--quiet"], stdin=io.StringIO("".join(text + "\n" for text in texts)), stdout=out)
    assert code == 0 and out.getvalue().splitlines() == [f"{row}\t{line['generated_text']}"  # row<TAB>text
                                                         for row, line in enumerate(lines, start=1)]
