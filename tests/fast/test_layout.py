"""layout.py: the CPU memory arrangement changes where weights sit, never what they are."""
import numpy as np
import pytest

import minibertgen as mb
import minibertgen.fast.layout as layout
from minibertgen.checkpoint.mapping import flatten, unflatten

SMALL = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
             max_position_embeddings=12)


@pytest.fixture()
def decoder():
    config = mb.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True)
    return mb.BertGenerationDecoder(config, seed=3)


def _plain_copy(model):
    """The model's weights as fresh C-ordered arrays: what the tree held before arranging."""
    return {name: np.array(array, order="C") for name, array in model.state_dict().items()}


def test_arranging_keeps_names_shapes_values_and_ties(decoder):
    before = _plain_copy(decoder)
    arranged = flatten(layout.arrange_for_cpu(unflatten(before)))
    assert arranged.keys() == before.keys()
    for name, array in before.items():
        assert arranged[name].shape == array.shape and arranged[name].dtype == array.dtype, name
        np.testing.assert_array_equal(arranged[name], array, err_msg=name)
    state = decoder.state_dict()
    assert state["lm_head.decoder.weight"] is state["bert.embeddings.word_embeddings.weight"]


def test_widening_short_rows_are_stored_transposed_and_the_rest_left_alone(decoder, monkeypatch):
    layer = decoder.params["bert"]["encoder"]["layer"][0]
    ffn = layer["intermediate"]["dense"]["weight"]  # [20, 16]: widening, short rows
    assert ffn.shape == (20, 16) and ffn.flags.f_contiguous and not ffn.flags.c_contiguous
    assert layer["output"]["dense"]["weight"].flags.c_contiguous  # [16, 20]: narrowing
    assert layer["attention"]["self"]["query"]["weight"].flags.c_contiguous  # [16, 16]: square
    head = decoder.params["lm_head"]["decoder"]["weight"]  # [50, 16], tied to the embeddings
    assert head.flags.f_contiguous and head is decoder.params["bert"]["embeddings"]["word_embeddings"]["weight"]
    monkeypatch.setattr(layout, "SHORT_ROWS", 16)  # rows of 16 no longer count as short
    tree = layout.arrange_for_cpu(unflatten(_plain_copy(decoder)))
    assert tree["bert"]["encoder"]["layer"][0]["intermediate"]["dense"]["weight"].flags.c_contiguous


def test_arranging_twice_copies_nothing_more(decoder):
    again = layout.arrange_for_cpu(decoder.params)
    for name, array in flatten(again).items():
        assert array is decoder.state_dict()[name], name


def test_quantized_weights_are_left_alone(decoder):
    from minibertgen.quantization.params import quantize_params

    quantized = quantize_params(decoder.params, mb.BitsAndBytesConfig(load_in_8bit=True))
    swapped = layout.arrange_for_cpu(quantized)
    ffn = swapped["bert"]["encoder"]["layer"][0]["intermediate"]["dense"]["weight"]
    assert getattr(ffn, "is_quantized", False)
    assert ffn is quantized["bert"]["encoder"]["layer"][0]["intermediate"]["dense"]["weight"]


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
