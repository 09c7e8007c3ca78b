"""Locating weight files in a checkpoint directory and merging shards."""
import json

import numpy as np
import pytest

from ckpt_helpers import dict_pickle, tensor, write_torch_zip
from conftest import require_module
from minibertgen.checkpoint.errors import CheckpointError
from minibertgen.checkpoint.files import find_weight_files, load_state_dict
from minibertgen.checkpoint.safetensors_io import write_safetensors

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.arange(4, dtype=np.int64)


def write_index(directory, weight_map, name="model.safetensors.index.json"):
    path = directory / name
    path.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return path


def sharded(directory):
    """A two-shard safetensors checkpoint: a.* in shard 1, b in shard 2."""
    write_safetensors({"a.weight": A}, directory / "model-00001-of-00002.safetensors")
    write_safetensors({"b": B}, directory / "model-00002-of-00002.safetensors")
    return write_index(directory, {"a.weight": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"})


def hand_built_bin(path):
    data = dict_pickle({"a.weight": tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1))})
    return write_torch_zip(path, data, {"0": A.tobytes()})


def test_safetensors_is_preferred_over_bin(tmp_path):
    write_safetensors({"a.weight": A}, tmp_path / "model.safetensors")
    hand_built_bin(tmp_path / "pytorch_model.bin")
    assert find_weight_files(tmp_path) == [tmp_path / "model.safetensors"]


def test_safetensors_index_is_preferred_over_bin(tmp_path):
    sharded(tmp_path)
    hand_built_bin(tmp_path / "pytorch_model.bin")
    assert find_weight_files(tmp_path) == [tmp_path / "model-00001-of-00002.safetensors",
                                           tmp_path / "model-00002-of-00002.safetensors"]


def test_bin_when_no_safetensors(tmp_path):
    hand_built_bin(tmp_path / "pytorch_model.bin")
    assert find_weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]
    np.testing.assert_array_equal(load_state_dict(tmp_path)["a.weight"], A)


def test_no_weights_names_directory_and_candidates(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as info:
        find_weight_files(tmp_path)
    for expected in (str(tmp_path), "model.safetensors", "model.safetensors.index.json",
                     "pytorch_model.bin", "pytorch_model.bin.index.json"):
        assert expected in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        find_weight_files(tmp_path / "does-not-exist")


def test_sharded_checkpoint_merges(tmp_path):
    index = sharded(tmp_path)
    for source in (tmp_path, index):
        loaded = load_state_dict(source)
        assert sorted(loaded) == ["a.weight", "b"]
        np.testing.assert_array_equal(loaded["a.weight"], A)
        np.testing.assert_array_equal(loaded["b"], B)


def test_missing_shard_is_named(tmp_path):
    sharded(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists shard 'model-00002-of-00002.safetensors'"):
        find_weight_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_state_dict(tmp_path)


def test_duplicate_key_across_shards(tmp_path):
    write_safetensors({"a.weight": A}, tmp_path / "s1.safetensors")
    write_safetensors({"a.weight": A + 1, "b": B}, tmp_path / "s2.safetensors")
    write_index(tmp_path, {"a.weight": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(CheckpointError) as info:
        load_state_dict(tmp_path)
    message = str(info.value)
    assert "'a.weight'" in message and "s1.safetensors" in message and "s2.safetensors" in message


def test_index_naming_a_tensor_no_shard_holds(tmp_path):
    sharded(tmp_path)
    write_index(tmp_path, {"a.weight": "model-00001-of-00002.safetensors",
                           "b": "model-00002-of-00002.safetensors",
                           "c": "model-00002-of-00002.safetensors"})
    with pytest.raises(CheckpointError, match="lists tensor 'c' in shard 'model-00002-of-00002.safetensors'"):
        load_state_dict(tmp_path)


@pytest.mark.parametrize("shard_name", ["../outside.safetensors", "/etc/passwd"])
def test_shard_outside_the_directory_is_refused(tmp_path, shard_name):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    write_safetensors({"a": A}, tmp_path / "outside.safetensors")
    write_index(checkpoint, {"a": shard_name})
    with pytest.raises(CheckpointError, match="points outside the checkpoint directory"):
        load_state_dict(checkpoint)


@pytest.mark.parametrize("content", ["{not json", '{"metadata": {}}', '{"weight_map": {"a": 3}}'])
def test_malformed_index(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        load_state_dict(tmp_path)


def test_load_single_files_by_extension(tmp_path):
    write_safetensors({"a.weight": A}, tmp_path / "weights.safetensors")
    np.testing.assert_array_equal(load_state_dict(tmp_path / "weights.safetensors")["a.weight"], A)
    hand_built_bin(tmp_path / "weights.pt")
    np.testing.assert_array_equal(load_state_dict(tmp_path / "weights.pt")["a.weight"], A)


def test_load_rejects_unknown_and_missing_files(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ValueError, match=r"weights\.h5.*expected a checkpoint directory"):
        load_state_dict(tmp_path / "weights.h5")
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_state_dict(tmp_path / "nothing.safetensors")


def test_sharded_torch_checkpoint(tmp_path):
    torch = require_module("torch")
    first = {"encoder.weight": torch.randn(3, 2)}
    second = {"decoder.weight": torch.randn(2, 2).half()}
    torch.save(first, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save(second, tmp_path / "pytorch_model-00002-of-00002.bin")
    write_index(tmp_path, {"encoder.weight": "pytorch_model-00001-of-00002.bin",
                           "decoder.weight": "pytorch_model-00002-of-00002.bin"},
                name="pytorch_model.bin.index.json")
    loaded = load_state_dict(tmp_path)
    np.testing.assert_array_equal(loaded["encoder.weight"], first["encoder.weight"].numpy())
    np.testing.assert_array_equal(loaded["decoder.weight"], second["decoder.weight"].numpy())
    assert loaded["decoder.weight"].dtype == np.float16


def test_real_minilm_checkpoint_matches_the_safetensors_library(minilm_dir):
    st_numpy = require_module("safetensors.numpy")
    loaded = load_state_dict(minilm_dir)
    expected = st_numpy.load_file(str(minilm_dir / "model.safetensors"))
    assert loaded.keys() == expected.keys() and len(loaded) > 50
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_transformers_save_pretrained_round_trip(tmp_path, safe_serialization):
    torch = require_module("torch")
    transformers = require_module("transformers")
    torch.manual_seed(0)
    config = transformers.BertGenerationConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=20,
    )
    model = transformers.BertGenerationEncoder(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    expected_file = "model.safetensors" if safe_serialization else "pytorch_model.bin"
    assert find_weight_files(tmp_path) == [tmp_path / expected_file]
    loaded = load_state_dict(tmp_path)
    state_dict = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    for name, value in state_dict.items():
        np.testing.assert_array_equal(loaded[name], value.numpy(), err_msg=name)
