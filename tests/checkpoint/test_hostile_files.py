"""Issue 17's hostile checkpoints, each reproduced as found: tiny files that asked for huge
allocations, pickles that escaped as raw NumPy/stdlib errors, names that broke the OS
call, checkpoints that loaded as nonsense.  Each must be a clear error naming the file."""
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

import minibertgen as mb
from ckpt_helpers import dict_pickle, tensor, text, write_torch_zip
from minibertgen.checkpoint import torch_pickle
from minibertgen.checkpoint.errors import CheckpointError
from minibertgen.checkpoint.files import load_state_dict
from minibertgen.checkpoint.safetensors_io import read_safetensors, write_safetensors
from minibertgen.checkpoint.torch_pickle import read_torch_bin

FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()
SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=32)


def peak_bytes(function):
    tracemalloc.start()
    try:
        function()
    except CheckpointError as exc:
        error = exc
    else:
        error = None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, error


@pytest.mark.parametrize("size", [(10000, 10000), (1000000, 1000000)])
def test_a_stride0_view_of_four_floats_is_refused_without_allocating(tmp_path, size):
    path = write_torch_zip(tmp_path / "pytorch_model.bin",
                           dict_pickle({"w": tensor("FloatStorage", "0", 4, 0, size, (0, 0))}), {"0": FOUR_FLOATS})
    assert path.stat().st_size < 1000
    peak, error = peak_bytes(lambda: read_torch_bin(path))
    assert error is not None and "pytorch_model.bin" in str(error) and "stride-0" in str(error)
    assert f"tensor of size {size}" in str(error)
    assert peak < 1 << 20  # issue 17: 382 MiB copied, or a raw MemoryError for 3.6 TiB


def test_many_overlapping_views_of_one_storage_are_refused(tmp_path):
    items = {f"w{i}": tensor("FloatStorage", "0", 1 << 16, i, ((1 << 16) - 200,), (1,)) for i in range(200)}
    path = write_torch_zip(tmp_path / "x.bin", dict_pickle(items), {"0": bytes(4 << 16)})
    with pytest.raises(CheckpointError, match="x.bin: tensor of size .* storage '0'"):
        read_torch_bin(path)


def test_a_deflate_bomb_storage_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", dict_pickle({"w": tensor("FloatStorage", "0", 4, 0, (4,), (1,))}))
        with archive.open("archive/data/0", "w") as member:  # 64 MiB of zeros, declared numel 4
            for _ in range(64):
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    peak, error = peak_bytes(lambda: read_torch_bin(path))
    assert error is not None and "should hold 4 x FloatStorage (16 bytes)" in str(error)
    assert "says it has 67108864 bytes" in str(error)
    assert peak < 1 << 20  # nothing inflated (issue 17: +2 GiB resident for 1 GiB of zeros)


def test_a_huge_data_pkl_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_pickle, "_MAX_PICKLE_BYTES", 1 << 16)
    path = write_torch_zip(tmp_path / "p.bin", b"\x80\x02}." + bytes(1 << 17), {})
    with pytest.raises(CheckpointError, match=r"p.bin: 'archive/data.pkl' says it holds 131076 bytes"):
        read_torch_bin(path)


def test_the_ext1_opcode_is_a_checkpoint_error(tmp_path):
    path = write_torch_zip(tmp_path / "ext.bin", b"\x80\x02\x82\x01.", {})
    with pytest.raises(CheckpointError, match=r"ext.bin: data.pkl is not a valid tensor pickle .*extension"):
        read_torch_bin(path)


@pytest.mark.parametrize("nesting", [
    b"]" * 3000 + b"a" * 2999,  # lists in lists
    (b"}" + text("k")) * 3000 + b"}" + b"s" * 3000,  # dicts in dicts
])
def test_a_pickle_nested_3000_deep_is_a_checkpoint_error(tmp_path, nesting):
    path = write_torch_zip(tmp_path / "deep.bin", b"\x80\x02}(" + text("x") + nesting + b"u.", {})
    with pytest.raises(CheckpointError, match="deep.bin: data.pkl is nested too deeply"):
        read_torch_bin(path)


def test_a_5000_character_shard_name_is_a_checkpoint_error(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "x" * 5000 + ".safetensors"}}))
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: shard name 'xxx.*xxx.safetensors' "
                                              r"has 5012 characters"):
        load_state_dict(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "a\x00b.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a usable file name"):
        load_state_dict(tmp_path)


def test_an_index_nested_3000_deep_is_a_checkpoint_error(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("[" * 3000 + "]" * 3000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_state_dict(tmp_path)


# -- nonsense that used to load silently ------------------------------------------------------------
def saved_encoder(tmp_path):
    mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), seed=0).save_pretrained(tmp_path)
    return tmp_path


def test_far_more_layers_than_the_checkpoint_holds_is_refused_before_building(tmp_path):
    saved_encoder(tmp_path)
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"holds 2 layer\(s\) .* num_hidden_layers=1000000.*num_hidden_layers=2"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path, num_hidden_layers=10**6)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 << 20  # issue 17: +3.5 GiB before anything was said
    with pytest.raises(ValueError, match="holds 2 layer"):
        mb.BertGenerationDecoder.from_pretrained(tmp_path, is_decoder=True, num_hidden_layers=3)
    with pytest.warns(UserWarning, match="unused weights"):  # fewer layers are fine: the rest is unused
        fewer = mb.BertGenerationEncoder.from_pretrained(tmp_path, num_hidden_layers=1)
    assert len(fewer.params["encoder"]["layer"]) == 1


def test_a_bool_word_embedding_matrix_is_refused(tmp_path):
    saved_encoder(tmp_path)
    state = {k: np.array(v) for k, v in read_safetensors(tmp_path / "model.safetensors").items()}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"] > 0
    write_safetensors(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="'embeddings.word_embeddings.weight' has dtype bool: expected a "
                                         "floating-point tensor"):
        mb.BertGenerationEncoder.from_pretrained(tmp_path)


def test_none_inside_an_attention_mask_and_other_bad_model_inputs_are_named():
    model = mb.BertGenerationEncoder(mb.BertGenerationConfig(**SMALL), seed=0)
    ids = np.array([[2, 5, 7, 9]])
    with pytest.raises(TypeError, match=r"attention_mask has dtype object \(None or text inside\?\)"):
        model(input_ids=ids, attention_mask=[[1, None, 1, 1]])
    with pytest.raises(ValueError, match=r"position_ids has shape \(1, 3\): expected \(1, 4\)"):
        model(input_ids=ids, position_ids=[[0, 1, 2]])
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3, 4\): expected \[batch=1, queries=4"):
        model(input_ids=ids, attention_mask=np.ones((1, 3, 4)))
    with pytest.raises(TypeError, match="head_mask='all': expected numbers"):
        model(input_ids=ids, head_mask="all")
    shared = model(input_ids=np.repeat(ids, 2, 0), position_ids=[[3, 2, 1, 0]]).last_hidden_state
    each = model(input_ids=np.repeat(ids, 2, 0), position_ids=[[3, 2, 1, 0]] * 2).last_hidden_state
    np.testing.assert_array_equal(shared, each)  # [1, seq] is shared by the batch, as transformers broadcasts
