"""torch .bin reading: real torch.save files, hand-built archives, corrupt and malicious ones."""
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from ckpt_helpers import call, dict_pickle, glob, integer, tensor, text, tup, write_torch_zip
from conftest import require_module
from minibertgen.checkpoint.errors import CheckpointError, UnsafePickleError
from minibertgen.checkpoint.torch_pickle import read_torch_bin


def assert_matches_torch(loaded, state_dict):
    torch = require_module("torch")
    assert loaded.keys() == state_dict.keys()
    for name, expected in state_dict.items():
        expected = expected.detach()
        if expected.dtype == torch.bfloat16:
            expected = expected.float()  # documented: bf16 comes back as exact float32
        assert loaded[name].shape == tuple(expected.shape), name
        assert loaded[name].dtype == expected.numpy().dtype, name
        np.testing.assert_array_equal(loaded[name], expected.numpy(), err_msg=name)


# --- real torch.save files ---------------------------------------------------------


def test_every_dtype_from_torch_save(tmp_path):
    torch = require_module("torch")
    generator = torch.Generator().manual_seed(0)
    state_dict = {
        "f32": torch.randn(3, 4, generator=generator),
        "f16": torch.randn(5, generator=generator).half(),
        "bf16": torch.randn(2, 3, generator=generator).bfloat16(),
        "f64": torch.randn(4, generator=generator).double(),
        "i64": torch.arange(-5, 5),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 7),
    }
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    assert_matches_torch(read_torch_bin(tmp_path / "pytorch_model.bin"), state_dict)


def test_views_sharing_storage_and_offsets(tmp_path):
    torch = require_module("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state_dict = {
        "base": base,
        "transposed": base.t(),
        "row": base[1],
        "column": base[:, 2],
        "block": base[1:3, 2:5],
        "stepped": base.view(-1)[3:20:4],
        "tail": base.view(-1)[10:],
        "expanded": base[0, :1].expand(3, 2),  # stride 0
    }
    torch.save(state_dict, tmp_path / "views.bin")
    loaded = read_torch_bin(tmp_path / "views.bin")
    assert_matches_torch(loaded, state_dict)
    for name, array in loaded.items():
        assert array.flags.c_contiguous, name
        assert not array.flags.writeable, name  # read-only, like read_safetensors
    # Rebuilt independently: a view does not alias the storage of its siblings.
    assert not np.shares_memory(loaded["row"], loaded["block"])


def test_module_state_dict_with_parameters_and_metadata(tmp_path):
    torch = require_module("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Embedding(5, 4))
    state_dict = model.state_dict()
    assert hasattr(state_dict, "_metadata")  # pickled via BUILD: must still be accepted
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    assert_matches_torch(read_torch_bin(tmp_path / "pytorch_model.bin"), state_dict)
    # nn.Parameter objects (not detached tensors) go through _rebuild_parameter.
    parameters = dict(model.named_parameters())
    torch.save(parameters, tmp_path / "params.bin")
    assert_matches_torch(read_torch_bin(tmp_path / "params.bin"), parameters)


def test_nested_checkpoint_is_flattened(tmp_path):
    torch = require_module("torch")
    weights = {"encoder.weight": torch.ones(2, 2), "encoder.bias": torch.zeros(2)}
    torch.save({"state_dict": weights, "epoch": 3, "name": "run-1", "lr": 1e-4,
                "betas": (0.9, 0.99), "extra": None}, tmp_path / "wrapped.bin")
    assert_matches_torch(read_torch_bin(tmp_path / "wrapped.bin"), weights)


def test_tensors_in_several_dicts_get_dotted_paths(tmp_path):
    torch = require_module("torch")
    torch.save({"model": {"w": torch.ones(2)}, "ema": {"w": torch.zeros(2)}}, tmp_path / "two.bin")
    loaded = read_torch_bin(tmp_path / "two.bin")
    assert sorted(loaded) == ["ema.w", "model.w"]
    np.testing.assert_array_equal(loaded["ema.w"], np.zeros(2, np.float32))


def test_tensor_inside_a_list_is_an_error_not_dropped(tmp_path):
    torch = require_module("torch")
    torch.save({"w": torch.ones(2), "layers": [torch.zeros(1)]}, tmp_path / "list.bin")
    with pytest.raises(CheckpointError, match="entry 'layers' is a list"):
        read_torch_bin(tmp_path / "list.bin")


def test_legacy_torch_format_is_refused_with_advice(tmp_path):
    torch = require_module("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"old\.bin: this is the legacy .* torch>=1\.6 .* safetensors"):
        read_torch_bin(tmp_path / "old.bin")


def test_malicious_object_saved_by_torch_is_refused(tmp_path):
    torch = require_module("torch")
    sentinel = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": ShellPayload(sentinel)}, tmp_path / "evil.bin")
    with pytest.raises(UnsafePickleError, match=r"refusing to load (os|posix)\.system from .*evil\.bin"):
        read_torch_bin(tmp_path / "evil.bin")
    assert not sentinel.exists()


# --- hand-built archives (numpy only) -----------------------------------------------


def test_hand_built_archive_with_shared_storage(tmp_path):
    storage = np.arange(12, dtype="<f4")
    data = dict_pickle({
        "matrix": tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
        "transposed": tensor("FloatStorage", "0", 12, 0, (4, 3), (1, 4)),
        "offset_slice": tensor("FloatStorage", "0", 12, 5, (2, 2), (4, 2)),
        "ids": tensor("LongStorage", "1", 3, 0, (3,), (1,)),
    })
    path = write_torch_zip(tmp_path / "hand.bin", data, {"0": storage.tobytes(),
                                                          "1": np.array([7, 8, 9], "<i8").tobytes()})
    loaded = read_torch_bin(path)
    np.testing.assert_array_equal(loaded["matrix"], storage.reshape(3, 4))
    np.testing.assert_array_equal(loaded["transposed"], storage.reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["offset_slice"], [[5, 7], [9, 11]])
    np.testing.assert_array_equal(loaded["ids"], [7, 8, 9])
    assert loaded["ids"].dtype == np.int64


def test_big_endian_archive(tmp_path):
    values = np.array([1.5, -2.0, 3.25], dtype=">f8")
    data = dict_pickle({"w": tensor("DoubleStorage", "0", 3, 0, (3,), (1,))})
    path = write_torch_zip(tmp_path / "big.bin", data, {"0": values.tobytes()}, byteorder="big")
    loaded = read_torch_bin(path)["w"]
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, [1.5, -2.0, 3.25])


def test_bf16_storage_widens_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    data = dict_pickle({"w": tensor("BFloat16Storage", "0", 3, 0, (3,), (1,))})
    loaded = read_torch_bin(write_torch_zip(tmp_path / "bf.bin", data, {"0": bits.tobytes()}))["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)


CORRUPT_ARCHIVES = {
    "missing_storage": (dict_pickle({"w": tensor("FloatStorage", "0", 4, 0, (4,), (1,))}), {},
                        "storage 'archive/data/0' is missing"),
    "short_storage": (dict_pickle({"w": tensor("FloatStorage", "0", 4, 0, (4,), (1,))}),
                      {"0": bytes(8)}, "should hold 4 x FloatStorage (16 bytes) but the archive says it has 8 bytes"),
    "view_past_storage": (dict_pickle({"w": tensor("FloatStorage", "0", 4, 2, (4,), (1,))}),
                          {"0": bytes(16)}, "needs element 5 of storage '0', which has 4"),
    "malformed_view": (dict_pickle({"w": tensor("FloatStorage", "0", 4, -1, (4,), (1,))}),
                       {"0": bytes(16)}, "malformed view"),
    "unsupported_storage": (dict_pickle({"w": tensor("ComplexFloatStorage", "0", 1, 0, (1,), (1,))}),
                            {"0": bytes(8)}, "torch.ComplexFloatStorage are not supported"),
    "bad_persistent_id": (dict_pickle({"w": tup(text("storage"), text("FloatStorage")) + b"Q"}), {},
                          "unexpected persistent id"),
    "truncated_pickle": (dict_pickle({"w": integer(1)})[:-3], {}, "data.pkl is not a valid tensor pickle"),
    "not_a_dict": (b"\x80\x02" + tensor("FloatStorage", "0", 1, 0, (), ()) + b".", {"0": bytes(4)},
                   "expected the checkpoint to hold a dict of tensors, got ndarray"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_ARCHIVES))
def test_corrupt_archive_raises_checkpoint_error_naming_file(tmp_path, case):
    data, storages, fragment = CORRUPT_ARCHIVES[case]
    path = write_torch_zip(tmp_path / f"{case}.bin", data, storages)
    with pytest.raises(CheckpointError) as info:
        read_torch_bin(path)
    assert not isinstance(info.value, UnsafePickleError)
    assert f"{case}.bin" in str(info.value)
    assert fragment in str(info.value)


def test_truncated_zip(tmp_path):
    data = dict_pickle({"w": tensor("FloatStorage", "0", 4, 0, (4,), (1,))})
    path = write_torch_zip(tmp_path / "cut.bin", data, {"0": bytes(16)})
    path.write_bytes(path.read_bytes()[:-30])  # loses the zip's central directory
    with pytest.raises(CheckpointError, match=r"cut\.bin: starts like a zip archive but is corrupt"):
        read_torch_bin(path)


def test_raw_pickle_is_called_legacy_format(tmp_path):
    path = tmp_path / "legacy.bin"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(CheckpointError, match=r"legacy\.bin: this is the legacy \(non-zip\)"):
        read_torch_bin(path)


def test_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.bin", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"other\.bin: expected exactly one <folder>/data\.pkl"):
        read_torch_bin(tmp_path / "other.bin")


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "text.bin"
    path.write_text("just some text")
    with pytest.raises(CheckpointError, match=r"text\.bin: not a torch checkpoint"):
        read_torch_bin(path)


# --- malicious pickles: refused, and nothing runs -------------------------------------


class EvalPayload:
    """Unpickled naively, this calls builtins.eval, which creates the sentinel file."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return eval, (f"open({self.sentinel!r}, 'w').close()",)


class ShellPayload(EvalPayload):
    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class SubprocessPayload(EvalPayload):
    def __reduce__(self):
        return subprocess.call, (["touch", self.sentinel],)


def malicious_archive(tmp_path, payload_class, protocol=2):
    """A torch-style zip whose data.pkl holds one genuine tensor and one payload."""
    sentinel = tmp_path / "sentinel"
    # Pickle the payload alone, then splice its opcodes in as a dict value.
    # fix_imports=False keeps Python 3 names (protocol 2 would say __builtin__.eval).
    payload = pickle.dumps(payload_class(sentinel), protocol=protocol, fix_imports=False)
    body = payload[2:-1] if payload[:1] == b"\x80" else payload[:-1]
    if protocol >= 4:  # framing and memo opcodes would not splice cleanly
        data = payload
    else:
        # The payload comes first so that a naive load reaches it (see the control test).
        data = dict_pickle({"evil": body, "w": tensor("FloatStorage", "0", 1, 0, (1,), (1,))})
    path = write_torch_zip(tmp_path / "pytorch_model.bin", data, {"0": bytes(4)})
    return path, sentinel, data


@pytest.mark.parametrize(
    "payload_class, global_name",
    [(EvalPayload, "builtins.eval"), (ShellPayload, f"{os.system.__module__}.system"),
     (SubprocessPayload, "subprocess.call")],
)
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload_class, global_name, protocol):
    path, sentinel, _ = malicious_archive(tmp_path, payload_class, protocol)
    with pytest.raises(UnsafePickleError) as info:
        read_torch_bin(path)
    assert f"refusing to load {global_name} from {path}" in str(info.value)
    assert "only torch tensor rebuilding is allowed" in str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert not sentinel.exists(), "the payload ran"


def test_the_sentinel_would_catch_a_naive_load(tmp_path):
    # Control for the test above: a plain pickle.loads of the same bytes does run the
    # payload, so "the sentinel does not exist" really means "nothing ran".
    _, sentinel, data = malicious_archive(tmp_path, EvalPayload)
    # It fails afterwards, on torch's globals or the persistent id: too late.
    with pytest.raises((pickle.UnpicklingError, ImportError)):
        pickle.loads(data)
    assert sentinel.exists()


def test_python2_module_names_are_refused_too(tmp_path):
    sentinel = tmp_path / "sentinel"
    payload = pickle.dumps(EvalPayload(sentinel), protocol=2)  # names __builtin__.eval
    path = write_torch_zip(tmp_path / "pytorch_model.bin", payload, {})
    with pytest.raises(UnsafePickleError, match=r"refusing to load __builtin__\.eval"):
        read_torch_bin(path)
    assert not sentinel.exists()


def test_hand_written_os_system_global_is_refused(tmp_path):
    sentinel = tmp_path / "sentinel"
    data = dict_pickle({"evil": call(glob("os", "system"), text(f"touch {sentinel}"))})
    path = write_torch_zip(tmp_path / "pytorch_model.bin", data, {})
    with pytest.raises(UnsafePickleError, match=r"refusing to load os\.system from .*pytorch_model\.bin"):
        read_torch_bin(path)
    assert not sentinel.exists()


def test_ordered_dict_global_is_allowed_but_nothing_else_from_collections(tmp_path):
    data = dict_pickle({"ok": call(glob("collections", "OrderedDict")),
                        "bad": call(glob("collections", "deque"))})
    with pytest.raises(UnsafePickleError, match=r"collections\.deque"):
        read_torch_bin(write_torch_zip(tmp_path / "c.bin", data, {}))
    data = dict_pickle({"w": tensor("FloatStorage", "0", 1, 0, (1,), (1,)),
                        "hooks": call(glob("collections", "OrderedDict"))})
    loaded = read_torch_bin(write_torch_zip(tmp_path / "d.bin", data, {"0": bytes(4)}))
    assert list(loaded) == ["w"]
