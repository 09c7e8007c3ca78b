"""Live comparisons with transformers 4.57 (the `reference` extra; CI makes a skip a failure).

Random configs and padded batches, the real all-MiniLM-L6-v2 checkpoint as an encoder
and warm-started into a bert2bert, and save/load round trips in both directions.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minibertgen as mb
from conftest import assert_loss_close, require_module

TOL = 1e-4


@pytest.fixture(scope="module")
def hf():
    require_module("torch")
    return require_module("transformers")


def torch_tensor(x):
    import torch

    return torch.from_numpy(np.asarray(x))


def spread(model, seed):
    """Larger random weights than transformers' init so attention is peaked (see make_reference.py)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 0.2 if param.ndim == 1 else 0.25
            base = 1.0 if "LayerNorm.weight" in name else 0.0
            param.copy_(base + scale * torch.randn(param.shape, generator=gen))
    return model.eval()


def padded_batch(rng, batch, seq, vocab):
    ids = rng.integers(0, vocab, size=(batch, seq))
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = seq  # at least one full row, as a tokenizer's padding produces
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return ids, mask


def max_diff(ours, theirs):
    return float(np.abs(np.asarray(ours, dtype=np.float32) - theirs.detach().numpy()).max())


@settings(max_examples=12, deadline=None)
@given(heads=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([4, 8]), layers=st.integers(1, 3),
       act=st.sampled_from(["gelu", "gelu_new", "relu", "silu"]),
       position=st.sampled_from(["absolute", "relative_key", "relative_key_query"]),
       batch=st.integers(1, 3), seq=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_random_encoder_decoder_configs(tmp_path_factory, hf, heads, head_dim, layers, act, position, batch,
                                        seq, seed):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    common = dict(vocab_size=61, hidden_size=heads * head_dim, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=3 * heads * head_dim, hidden_act=act,
                  max_position_embeddings=32, position_embedding_type=position)
    enc = hf.BertGenerationEncoder(hf.BertGenerationConfig(**common))
    dec = hf.BertGenerationDecoder(hf.BertGenerationConfig(**common, is_decoder=True, add_cross_attention=True))
    model = spread(hf.EncoderDecoderModel(encoder=enc, decoder=dec), seed)
    directory = tmp_path_factory.mktemp("random")
    model.save_pretrained(directory)
    ours = mb.EncoderDecoderModel.from_pretrained(directory)

    src, src_mask = padded_batch(rng, batch, seq, 61)
    tgt, tgt_mask = padded_batch(rng, batch, max(1, seq - 1), 61)
    with torch.no_grad():
        ref = model(input_ids=torch_tensor(src), attention_mask=torch_tensor(src_mask),
                    decoder_input_ids=torch_tensor(tgt), decoder_attention_mask=torch_tensor(tgt_mask),
                    use_cache=False)
    # use_cache=False on both sides: with a cache, relative distances follow transformers' last-key
    # rule (tests/training/test_relative_distances_live.py checks that one)
    out = ours(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask,
               use_cache=False)
    assert max_diff(out.encoder_last_hidden_state, ref.encoder_last_hidden_state) <= TOL
    assert max_diff(out.logits, ref.logits) <= TOL


def test_minilm_as_bert_generation_encoder(hf, minilm_dir):
    import torch

    tokenizer = hf.BertTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(["The quick brown fox jumps over the lazy dog.", "Hello world!"], padding=True,
                      return_tensors="np")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_model = hf.BertGenerationEncoder.from_pretrained(minilm_dir).eval()
        ours = mb.BertGenerationEncoder.from_pretrained(minilm_dir)
    with torch.no_grad():
        ref = ref_model(input_ids=torch_tensor(batch["input_ids"]),
                        attention_mask=torch_tensor(batch["attention_mask"]), output_hidden_states=True)
    out = ours(**batch, output_hidden_states=True)  # token_type_ids tolerated, as in transformers
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], 384)
    assert max_diff(out.last_hidden_state, ref.last_hidden_state) <= TOL
    assert len(out.hidden_states) == len(ref.hidden_states) == 7  # embeddings + 6 layers
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        assert max_diff(mine, theirs) <= TOL


def test_minilm_warm_started_bert2bert(hf, minilm_dir, tmp_path):
    """The documentation's bert2bert recipe on real weights.

    Cross-attention weights are new (random) on both sides, so transformers' model is saved
    and loaded by us: every other weight must come from MiniLM, and the logits and loss
    must match.
    """
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = hf.BertGenerationEncoder.from_pretrained(minilm_dir, bos_token_id=101, eos_token_id=102)
        decoder = hf.BertGenerationDecoder.from_pretrained(minilm_dir, add_cross_attention=True, is_decoder=True,
                                                           bos_token_id=101, eos_token_id=102)
        bert2bert = hf.EncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    bert2bert.config.decoder_start_token_id = 101
    bert2bert.config.pad_token_id = 0
    bert2bert.save_pretrained(tmp_path)

    tokenizer = hf.BertTokenizer.from_pretrained(minilm_dir)
    input_ids = tokenizer("This is a long article to summarize", add_special_tokens=False,
                          return_tensors="np").input_ids
    labels = tokenizer("This is a short summary", return_tensors="np").input_ids
    with torch.no_grad():
        ref = bert2bert(input_ids=torch_tensor(input_ids), decoder_input_ids=torch_tensor(labels),
                        labels=torch_tensor(labels))
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    out = ours(input_ids=input_ids, decoder_input_ids=labels, labels=labels)
    assert max_diff(out.logits, ref.logits) <= TOL
    assert_loss_close(out.loss, ref.loss)

    # Our own warm start reuses exactly MiniLM's weights where BERT has them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = mb.EncoderDecoderModel(
            encoder=mb.BertGenerationEncoder.from_pretrained(minilm_dir, bos_token_id=101, eos_token_id=102),
            decoder=mb.BertGenerationDecoder.from_pretrained(minilm_dir, add_cross_attention=True,
                                                             is_decoder=True, bos_token_id=101, eos_token_id=102))
    theirs = {k: v.numpy() for k, v in bert2bert.state_dict().items()}
    mine_flat = mine.state_dict()
    for name in ["encoder.encoder.layer.5.output.dense.weight",
                 "decoder.bert.encoder.layer.2.attention.self.query.weight",
                 "decoder.bert.embeddings.word_embeddings.weight"]:
        np.testing.assert_array_equal(mine_flat[name], theirs[name])
    cross = mine_flat["decoder.bert.encoder.layer.0.crossattention.self.query.weight"]
    assert abs(float(cross.std()) - 0.02) < 0.002  # transformers' N(0, initializer_range)
    np.testing.assert_array_equal(mine_flat["decoder.bert.encoder.layer.0.crossattention.output.LayerNorm.weight"],
                                  np.ones(384, dtype=np.float32))


@pytest.mark.parametrize("kind", ["encoder", "decoder", "seq2seq"])
def test_our_save_loads_in_transformers(hf, tmp_path, kind):
    import torch

    config = dict(vocab_size=53, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)
    if kind == "encoder":
        ours, cls = mb.BertGenerationEncoder(mb.BertGenerationConfig(**config), seed=1), hf.BertGenerationEncoder
    elif kind == "decoder":
        ours = mb.BertGenerationDecoder(mb.BertGenerationConfig(**config, is_decoder=True), seed=2)
        cls = hf.BertGenerationDecoder
    else:
        enc = mb.BertGenerationEncoder(mb.BertGenerationConfig(**config), seed=3)
        dec = mb.BertGenerationDecoder(
            mb.BertGenerationConfig(**config, is_decoder=True, add_cross_attention=True), seed=4)
        ours, cls = mb.EncoderDecoderModel(encoder=enc, decoder=dec), hf.EncoderDecoderModel
    ours.save_pretrained(tmp_path)
    theirs = cls.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(0).integers(0, 53, size=(2, 6))
    with torch.no_grad():
        if kind == "seq2seq":
            ref = theirs(input_ids=torch_tensor(ids), decoder_input_ids=torch_tensor(ids[:, :4])).logits
            out = ours(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        else:
            key = "last_hidden_state" if kind == "encoder" else "logits"
            ref = theirs(input_ids=torch_tensor(ids))[key]
            out = ours(input_ids=ids)[key]
    assert max_diff(out, ref) <= TOL
