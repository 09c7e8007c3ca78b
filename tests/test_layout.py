"""layout.py: the CPU memory arrangement changes where weights sit, never what they are."""
import numpy as np
import pytest

import minibertgen as mb
import minibertgen.layout as layout
from minibertgen.checkpoint.mapping import flatten, unflatten

SMALL = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
             max_position_embeddings=12)
IDS = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


@pytest.fixture()
def decoder():
    config = mb.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True)
    return mb.BertGenerationDecoder(config, seed=3)


def _self_attention(model, layer=0):
    return model.params["bert"]["encoder"]["layer"][layer]["attention"]["self"]


def _plain_copy(model):
    """The model's weights as fresh C-ordered arrays: what the tree held before arranging."""
    return {name: np.array(array, order="C") for name, array in model.state_dict().items()}


def test_arranging_keeps_names_shapes_values_and_ties(decoder):
    before = _plain_copy(decoder)
    arranged = flatten(layout.arrange_for_cpu(unflatten(before)))
    assert arranged.keys() == before.keys()  # the fused entries are not weights
    for name, array in before.items():
        assert arranged[name].shape == array.shape and arranged[name].dtype == array.dtype, name
        np.testing.assert_array_equal(arranged[name], array, err_msg=name)
    state = decoder.state_dict()
    assert state["lm_head.decoder.weight"] is state["bert.embeddings.word_embeddings.weight"]


def test_query_key_value_are_views_of_one_fused_projection(decoder):
    p = _self_attention(decoder)
    fused = layout.fused_qkv(p)
    assert fused is not None and fused.weight.shape == (48, 16) and fused.bias.shape == (48,)
    for i, name in enumerate(("query", "key", "value")):
        np.testing.assert_array_equal(fused.weight[16 * i:16 * (i + 1)], p[name]["weight"])
        np.testing.assert_array_equal(fused.bias[16 * i:16 * (i + 1)], p[name]["bias"])
    p["key"]["weight"][0, 0] = 123.0  # an edit in place is an edit of the fused weight
    assert fused.weight[16, 0] == 123.0


def test_replacing_a_weight_turns_the_fusion_off(decoder):
    reference = decoder(input_ids=IDS).logits
    p = _self_attention(decoder)
    p["value"]["weight"] = p["value"]["weight"] * 2.0  # a new array: the fused copy is stale now
    assert layout.fused_qkv(p) is None
    changed = decoder(input_ids=IDS).logits

    fresh = mb.BertGenerationDecoder(decoder.config, unflatten(_plain_copy(decoder)))
    np.testing.assert_allclose(changed, fresh(input_ids=IDS).logits, rtol=0, atol=1e-6)
    assert not np.allclose(changed, reference)  # the doubled value weight did take effect


def test_short_rows_are_stored_transposed_and_long_rows_left_alone(decoder, monkeypatch):
    ffn = decoder.params["bert"]["encoder"]["layer"][0]["intermediate"]["dense"]["weight"]  # [20, 16]
    assert ffn.shape == (20, 16) and ffn.flags.f_contiguous and not ffn.flags.c_contiguous
    monkeypatch.setattr(layout, "SHORT_ROWS", 16)  # rows of 16 no longer count as short
    tree = layout.arrange_for_cpu(unflatten(_plain_copy(decoder)))
    ffn = tree["bert"]["encoder"]["layer"][0]["intermediate"]["dense"]["weight"]
    assert ffn.flags.c_contiguous
    fused = tree["bert"]["encoder"]["layer"][0]["attention"]["self"]["_qkv"]
    assert fused.weight.flags.c_contiguous  # [48, 16] row-major when rows are long


def test_arranging_twice_reuses_the_fused_projection(decoder):
    first = decoder.params
    again = layout.arrange_for_cpu(first)
    p, q = _self_attention(decoder), again["bert"]["encoder"]["layer"][0]["attention"]["self"]
    assert q["_qkv"] is p["_qkv"] and q["query"]["weight"] is p["query"]["weight"]


def test_quantized_and_hand_built_trees_are_not_fused(decoder):
    tree = unflatten(_plain_copy(decoder))  # a tree built by hand: nothing fused
    assert layout.fused_qkv(tree["bert"]["encoder"]["layer"][0]["attention"]["self"]) is None
    from minibertgen.quantization.params import quantize_params

    # quantizing swaps the weights, so the derived "_" entries are dropped with them
    swapped = quantize_params(decoder.params, mb.BitsAndBytesConfig(load_in_8bit=True))
    p = swapped["bert"]["encoder"]["layer"][0]["attention"]["self"]
    assert "_qkv" not in p and getattr(p["query"]["weight"], "is_quantized", False)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED") or not __import__("os").path.exists(
    "/proc/self/statm"), reason="needs Linux madvise and /proc")
def test_copied_memory_mapped_weights_give_their_pages_back(tmp_path):
    """A weight the layout copies is not counted twice: the file pages it was read from
    leave resident memory, and the old array still reads the same values."""
    from minibertgen.checkpoint.safetensors_io import read_safetensors, write_safetensors

    weight = np.random.default_rng(0).standard_normal((4096, 512)).astype(np.float32)  # 8 MiB, short rows
    write_safetensors({"dense.weight": weight, "other": np.zeros(8, np.float32)}, tmp_path / "w.safetensors")
    mapped = read_safetensors(tmp_path / "w.safetensors")
    np.asarray(mapped["dense.weight"]).sum()  # fault every page in
    before = _resident_bytes()
    tree = layout.arrange_for_cpu({"dense": {"weight": mapped["dense.weight"]}})
    after = _resident_bytes()
    assert tree["dense"]["weight"].flags.f_contiguous  # copied into the transposed layout
    assert after < before + 2 * 2**20  # +8 MiB of copy, -8 MiB of file pages (not +8)
    np.testing.assert_array_equal(mapped["dense.weight"], weight)  # the old view reads the file again
    np.testing.assert_array_equal(tree["dense"]["weight"], weight)
