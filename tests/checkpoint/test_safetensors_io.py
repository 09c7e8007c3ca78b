"""safetensors reading/writing: round trips, zero-copy, interop, and every corrupt file."""
import json
import os

import numpy as np
import pytest

from conftest import require_module
from minibertgen.checkpoint.errors import CheckpointError
from minibertgen.checkpoint.safetensors_io import (
    read_safetensors,
    read_safetensors_metadata,
    write_safetensors,
)

ALL_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
              "uint8", "uint16", "uint32", "uint64", "bool"]


def sample(dtype, shape=(3, 4), seed=0):
    return np.asarray(_random(dtype, shape, seed))  # 0-d arrays, never NumPy scalars


def _random(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def raw_file(path, header, data=b"", pad=True):
    """Write a safetensors file by hand from a header dict (or raw header bytes)."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_each_dtype_round_trips(tmp_path, dtype):
    tensors = {"matrix": sample(dtype), "scalar": sample(dtype, shape=()),
               "empty": sample(dtype, shape=(0, 5))}
    write_safetensors(tensors, tmp_path / "m.safetensors")
    loaded = read_safetensors(tmp_path / "m.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype
        assert loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name], expected)


def test_read_is_zero_copy_and_read_only(tmp_path):
    path = write_and_path(tmp_path, {"a": sample("float32"), "b": sample("int64", (7,))})
    for name, array in read_safetensors(path).items():
        base, seen_memmap = array, None
        while base is not None:
            if isinstance(base, np.memmap):
                seen_memmap = base
            base = getattr(base, "base", None)  # the chain ends at an mmap.mmap
        assert seen_memmap is not None, f"{name} is a copy, not a view of the mapped file"
        assert os.path.samefile(seen_memmap.filename, path)
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[...] = 0


def write_and_path(tmp_path, tensors, **kwargs):
    path = tmp_path / "model.safetensors"
    write_safetensors(tensors, path, **kwargs)
    return path


def test_header_is_padded_and_tensors_aligned(tmp_path):
    tensors = {"odd": np.arange(3, dtype=np.int8), "wide": np.arange(5, dtype=np.float64),
               "half": np.arange(3, dtype=np.float16)}
    path = write_and_path(tmp_path, tensors)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert header_len % 8 == 0
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"] == {"format": "pt"}
    for name, tensor in tensors.items():
        begin, end = header[name]["data_offsets"]
        assert (8 + header_len + begin) % tensor.itemsize == 0, name
        assert end - begin == tensor.nbytes
    assert 8 + header_len + sum(t.nbytes for t in tensors.values()) == len(raw)


def test_bf16_is_widened_to_float32_exactly(tmp_path):
    # bfloat16 is the top half of a float32: these values are exactly representable.
    values = np.array([1.0, -2.5, 3.140625, 0.0, -0.0, np.inf, 65280.0], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    path = raw_file(tmp_path / "bf16.safetensors",
                    {"w": {"dtype": "BF16", "shape": [7], "data_offsets": [0, 14]}},
                    bits.tobytes())
    loaded = read_safetensors(path)["w"]
    assert loaded.dtype == np.float32 and not loaded.flags.writeable
    np.testing.assert_array_equal(loaded.view(np.uint32), values.view(np.uint32))


def test_metadata_default_custom_and_none(tmp_path):
    assert read_safetensors_metadata(write_and_path(tmp_path, {"a": sample("float32")})) == {"format": "pt"}
    custom = {"format": "np", "note": "hello"}
    path = write_and_path(tmp_path, {"a": sample("float32")}, metadata=custom)
    assert read_safetensors_metadata(path) == custom
    assert "__metadata__" not in read_safetensors(path)
    path = write_and_path(tmp_path, {"a": sample("float32")}, metadata={})
    assert read_safetensors_metadata(path) == {}


def test_writes_non_contiguous_and_big_endian_arrays(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    big = np.arange(5, dtype=">i4")
    path = write_and_path(tmp_path, {"transposed": base.T, "strided": base[::2, 1::3], "big": big})
    loaded = read_safetensors(path)
    np.testing.assert_array_equal(loaded["transposed"], base.T)
    np.testing.assert_array_equal(loaded["strided"], base[::2, 1::3])
    np.testing.assert_array_equal(loaded["big"], big)
    assert loaded["big"].dtype == np.dtype("<i4")


class FakeCupyArray:
    """Stands in for a CuPy array: lives on the 'device', .get() copies to host."""

    __cuda_array_interface__ = {}

    def __init__(self, host):
        self._host = host

    def get(self):
        return self._host.copy()


def test_accepts_gpu_arrays_through_get(tmp_path):
    host = sample("float16")
    path = write_and_path(tmp_path, {"gpu": FakeCupyArray(host)})
    np.testing.assert_array_equal(read_safetensors(path)["gpu"], host)


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = write_and_path(tmp_path, {"old": sample("float32")})
    before = path.read_bytes()

    def failing_fsync(_fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors({"new": sample("float64", (100, 100))}, path)
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp left


@pytest.mark.parametrize(
    "tensors, metadata, error, fragment",
    [
        ({"c": np.zeros(2, np.complex64)}, None, TypeError, "complex64"),
        ({"l": [1.0, 2.0]}, None, TypeError, "'l' must be a NumPy or CuPy array"),
        ({"__metadata__": np.zeros(2)}, None, ValueError, "__metadata__"),
        ({"a": np.zeros(2)}, {"format": 1}, TypeError, "metadata must be a dict of str -> str"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path, tensors, metadata, error, fragment):
    with pytest.raises(error, match=fragment):
        write_safetensors(tensors, tmp_path / "x.safetensors", metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_write_into_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        write_safetensors({"a": np.zeros(1)}, tmp_path / "nowhere" / "m.safetensors")


# --- corrupt files -----------------------------------------------------------------

GOOD_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
CORRUPT_HEADERS = {
    "invalid_json": (b'{"a": {"dtype": ', "not valid UTF-8 JSON"),
    "not_utf8": (b'{"\xff": 1}', "not valid UTF-8 JSON"),
    "json_not_object": (b"[1, 2, 3]", "must be a JSON object"),
    "unknown_dtype": ({"a": {**GOOD_ENTRY, "dtype": "F8_E4M3"}}, "unknown or unsupported dtype 'F8_E4M3'"),
    "missing_field": ({"a": {"dtype": "F32", "shape": [2, 2]}}, "dtype, shape and data_offsets"),
    "negative_dim": ({"a": {**GOOD_ENTRY, "shape": [-2, -2]}}, "shape must be a list of non-negative"),
    "bad_offsets": ({"a": {**GOOD_ENTRY, "data_offsets": [0]}}, "data_offsets must be [begin, end]"),
    "begin_after_end": ({"a": {**GOOD_ENTRY, "data_offsets": [16, 0]}}, "begin after they end"),
    "span_mismatch": ({"a": {**GOOD_ENTRY, "shape": [3, 2]}}, "span 16 bytes but shape [3, 2] of F32 needs 24"),
    "out_of_range": ({"a": {**GOOD_ENTRY, "data_offsets": [16, 32]}}, "ends at byte"),
    "overlap": ({"a": GOOD_ENTRY, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
                "'a' and 'b' overlap"),
    "bad_metadata": ({"__metadata__": {"format": 1}, "a": GOOD_ENTRY}, "__metadata__ must map strings"),
    "duplicate_name": (b'{"a": ' + json.dumps(GOOD_ENTRY).encode() + b', "a": '
                       + json.dumps(GOOD_ENTRY).encode() + b"}", "names 'a' more than once"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_HEADERS))
def test_corrupt_header_raises_checkpoint_error_naming_file(tmp_path, case):
    header, fragment = CORRUPT_HEADERS[case]
    path = raw_file(tmp_path / f"{case}.safetensors", header, bytes(16))
    for reader in (read_safetensors, read_safetensors_metadata):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        assert path.name in str(info.value)
        assert fragment in str(info.value)


def test_file_shorter_than_8_bytes(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: file has 3 bytes"):
        read_safetensors(path)


def test_header_length_beyond_file(tmp_path):
    path = tmp_path / "long.safetensors"
    path.write_bytes((500).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"long\.safetensors: header length field says 500 bytes"):
        read_safetensors(path)


def test_huge_header_length_field(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**63).to_bytes(8, "little") + b"{}" + bytes(64))
    with pytest.raises(CheckpointError, match="huge.safetensors: header length field"):
        read_safetensors(path)


def test_truncated_data_names_tensor_and_sizes(tmp_path):
    path = write_and_path(tmp_path, {"x": np.zeros(1024, np.float32)})
    raw = path.read_bytes()
    path.write_bytes(raw[:1000])
    with pytest.raises(CheckpointError) as info:
        read_safetensors(path)
    message = str(info.value)
    assert "model.safetensors: tensor 'x'" in message
    assert f"ends at byte {len(raw)}" in message and "the file has 1000 bytes (truncated?)" in message


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        read_safetensors(tmp_path / "absent.safetensors")


# --- interop with the safetensors library and transformers --------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_reads_files_written_by_safetensors_numpy(tmp_path, dtype):
    st_numpy = require_module("safetensors.numpy")
    tensors = {"w": sample(dtype), "s": sample(dtype, shape=()), "e": sample(dtype, (2, 0))}
    st_numpy.save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"k": "v"})
    loaded = read_safetensors(tmp_path / "lib.safetensors")
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype
        np.testing.assert_array_equal(loaded[name], expected)
    assert read_safetensors_metadata(tmp_path / "lib.safetensors") == {"k": "v"}


def test_reads_bf16_written_by_safetensors_torch(tmp_path):
    torch = require_module("torch")
    st_torch = require_module("safetensors.torch")
    weight = torch.randn(5, 7, dtype=torch.bfloat16)
    st_torch.save_file({"w": weight, "f": weight.float()}, str(tmp_path / "bf.safetensors"))
    loaded = read_safetensors(tmp_path / "bf.safetensors")
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], weight.float().numpy())
    np.testing.assert_array_equal(loaded["f"], weight.float().numpy())


def test_our_files_load_in_safetensors_torch(tmp_path):
    torch = require_module("torch")
    st_torch = require_module("safetensors.torch")
    tensors = {dtype: sample(dtype, seed=i) for i, dtype in enumerate(ALL_DTYPES)
               if dtype not in ("uint32", "uint64")}  # torch lacks full uint32/64 support
    path = write_and_path(tmp_path, tensors)
    loaded = st_torch.load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for name, expected in tensors.items():
        assert torch.equal(loaded[name], torch.from_numpy(expected)), name
    with require_module("safetensors").safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_our_files_load_in_transformers(tmp_path):
    torch = require_module("torch")
    modeling_utils = require_module("transformers.modeling_utils")
    tensors = {"encoder.weight": sample("float32"), "encoder.bias": sample("float16", (4,))}
    path = write_and_path(tmp_path, tensors)
    loaded = modeling_utils.load_state_dict(str(path))
    for name, expected in tensors.items():
        assert torch.equal(loaded[name], torch.from_numpy(expected))
