"""Read and write the safetensors format with NumPy alone.

The format is deliberately simple, which is what makes it safe (no code, only data):

    bytes 0..8       N, the header length, unsigned 64-bit little-endian
    bytes 8..8+N     a UTF-8 JSON object:
                       {"__metadata__": {str: str},              (optional)
                        "<name>": {"dtype": "F32",
                                   "shape": [2, 3],
                                   "data_offsets": [begin, end]}, ...}
    bytes 8+N..      the data section; each tensor is the C-order, little-endian
                     bytes data[begin:end] (offsets are relative to the section)

Reading maps the file once with ``np.memmap`` and hands out read-only views of it,
so opening a multi-gigabyte checkpoint costs no copy and pages load on first touch.
"""
import json
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .atomic import write_atomically

# safetensors dtype code -> NumPy dtype (explicitly little-endian, as the format is).
# BF16 is absent on purpose: NumPy has no bfloat16, see _bf16_to_float32.
_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_BF16_STORAGE = np.dtype("<u2")  # bfloat16 bits, read raw then widened to float32
_ITEMSIZE = {**{code: dt.itemsize for code, dt in _NUMPY_DTYPES.items()}, "BF16": 2}
_HEADER_SIZE_LIMIT = 100 * 1024 * 1024  # the safetensors library's own limit
_METADATA_KEY = "__metadata__"


def read_safetensors(path):
    """Load every tensor of a ``.safetensors`` file as a ``dict[str, np.ndarray]``.

    The arrays are zero-copy, read-only views of one ``np.memmap`` of the file (their
    ``.base`` chain ends at it), so nothing is copied at load; the file stays mapped
    as long as any array is alive. Call ``.copy()`` on a tensor you want to modify.

    BF16 tensors are the exception: NumPy has no bfloat16, so they are returned as
    (also read-only) float32 copies. The conversion is exact (a bfloat16 is the top 16 bits of a
    float32, so ``float32_bits = bf16_bits << 16``); it doubles their memory.

    Raises CheckpointError (naming the file) for a short or truncated file, a header
    that is not a JSON object, an unknown dtype, or offsets that are out of range,
    overlap, or do not match ``prod(shape) * itemsize``.
    """
    path = Path(path)
    header, data_start, _ = _read_header(path)
    # One map for the whole file; every tensor below is a slice of it.
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = np.asarray(mapped[data_start + begin : data_start + end])
        if entry["dtype"] == "BF16":
            widened = _bf16_to_float32(raw.view(_BF16_STORAGE)).reshape(entry["shape"])
            widened.flags.writeable = False  # read-only like every other loaded tensor
            tensors[name] = widened
        else:
            tensors[name] = raw.view(_NUMPY_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return tensors


def read_safetensors_metadata(path):
    """Return the ``__metadata__`` dict (str -> str) of a safetensors file, or ``{}``.

    Only the header is read, but it is validated as fully as by read_safetensors.
    """
    _, _, metadata = _read_header(Path(path))
    return dict(metadata)


def _bf16_to_float32(bits):
    """Widen raw bfloat16 bits (uint16) to float32 exactly: they are its top half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _read_header(path):
    """Parse and validate the header; return (tensor entries, data start, metadata)."""
    file_size = _file_size(path)
    if file_size < 8:
        raise CheckpointError(
            f"{path}: file has {file_size} bytes, too short for a safetensors file "
            "(at least 8 bytes of header length expected)"
        )
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        if header_len > _HEADER_SIZE_LIMIT:
            raise CheckpointError(
                f"{path}: header length field says {header_len} bytes, over the "
                f"{_HEADER_SIZE_LIMIT}-byte limit of the format (corrupt file?)"
            )
        if header_len > file_size - 8:
            raise CheckpointError(
                f"{path}: header length field says {header_len} bytes but the file has "
                f"only {file_size - 8} bytes after it (truncated, or not a safetensors file?)"
            )
        header_bytes = handle.read(header_len)
    header = _parse_json(path, header_bytes)
    metadata = _validate_metadata(path, header.pop(_METADATA_KEY, {}))
    data_start = 8 + header_len
    for name, entry in header.items():
        _validate_entry(path, name, entry, data_start, file_size)
    _check_no_overlap(path, header, file_size - data_start)
    return header, data_start, metadata


def _file_size(path):
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} does not exist (or is not a file)")
    return path.stat().st_size


def _parse_json(path, header_bytes):
    def refuse_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise CheckpointError(f"{path}: header names {duplicate!r} more than once")
        return dict(pairs)

    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=refuse_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: header must be a JSON object, got {type(header).__name__}"
        )
    return header


def _validate_metadata(path, metadata):
    is_str_map = isinstance(metadata, dict) and all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    )
    if not is_str_map:
        raise CheckpointError(
            f"{path}: {_METADATA_KEY} must map strings to strings, got {metadata!r}"
        )
    return metadata


def _validate_entry(path, name, entry, data_start, file_size):
    """Check one tensor entry's dtype, shape and offsets against the file."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or {"dtype", "shape", "data_offsets"} - entry.keys():
        raise CheckpointError(
            f"{where}: entry must be an object with dtype, shape and data_offsets, "
            f"got {entry!r}"
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _ITEMSIZE:
        raise CheckpointError(
            f"{where}: unknown or unsupported dtype {dtype!r}; "
            f"supported: {', '.join(sorted(_ITEMSIZE))}"
        )
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise CheckpointError(
            f"{where}: shape must be a list of non-negative integers, got {shape!r}"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise CheckpointError(
            f"{where}: data_offsets must be [begin, end] non-negative integers, got {offsets!r}"
        )
    begin, end = offsets
    if begin > end:
        raise CheckpointError(f"{where}: data_offsets {offsets} begin after they end")
    expected = int(np.prod(shape, dtype=object)) * _ITEMSIZE[dtype]
    if end - begin != expected:
        raise CheckpointError(
            f"{where}: data_offsets {offsets} span {end - begin} bytes but shape {shape} "
            f"of {dtype} needs {expected}"
        )
    if data_start + end > file_size:
        raise CheckpointError(
            f"{where}: header says it ends at byte {data_start + end} but the file has "
            f"{file_size} bytes (truncated?)"
        )


def _is_count(value):
    # bool is an int subclass; true/false in a shape is a corrupt header, not 1/0.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_no_overlap(path, header, data_size):
    """Tensors must tile the data section exactly, as the safetensors library demands: no
    overlap (two names for one memory), no gap, nothing after the last tensor."""
    spans = sorted((*entry["data_offsets"], name) for name, entry in header.items())
    reached, previous = 0, None
    for begin, end, name in spans:
        if begin < reached:
            raise CheckpointError(
                f"{path}: tensors {previous!r} and {name!r} overlap in the data section "
                f"({previous!r} ends at {reached}, {name!r} begins at {begin})"
            )
        if begin > reached:
            raise CheckpointError(f"{path}: {begin - reached} unused bytes before tensor {name!r} in the data "
                                  f"section (at byte {reached}); expected tensors back to back")
        reached, previous = end, name
    if reached != data_size:
        raise CheckpointError(f"{path}: the data section has {data_size} bytes but its tensors cover "
                              f"{reached}; expected them to cover it exactly (a truncated or padded file?)")


def write_safetensors(tensors, path, metadata=None):
    """Write ``tensors`` (name -> NumPy or CuPy array) to ``path`` in safetensors format.

    The file loads with the ``safetensors`` library and transformers. Tensors are
    written in their own dtype (float32 stays float32, int64 stays int64, ...);
    CuPy arrays are copied to the host with ``.get()`` first. ``metadata`` (str ->
    str) defaults to ``{"format": "pt"}``, which transformers expects.

    The write is atomic: data goes to a temporary file in the same directory that is
    renamed over ``path`` only once complete, so a failure never leaves a
    half-written checkpoint behind (and never damages an existing one).
    """
    path = Path(path)
    write = safetensors_writer(tensors, metadata)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"write_safetensors: directory {path.parent} for path={str(path)!r} does not exist"
        )
    write_atomically(path, write)


def safetensors_writer(tensors, metadata=None):
    """Check ``tensors`` and ``metadata`` and return ``write(handle)``, which writes the
    whole safetensors file to an open binary handle (save_pretrained writes every file
    of a model this way before renaming any of them, see saving.py)."""
    metadata = {"format": "pt"} if metadata is None else metadata
    _check_metadata_argument(metadata)
    if not hasattr(tensors, "items"):
        raise TypeError(
            "write_safetensors: tensors must be a dict of name -> array, "
            f"got {type(tensors).__name__}"
        )
    arrays = {name: _to_host_array(name, value) for name, value in tensors.items()}
    header, ordered = _build_header(arrays, metadata)
    return lambda handle: _write_payload(handle, header, ordered)


def _check_metadata_argument(metadata):
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise TypeError(
            f"write_safetensors: metadata must be a dict of str -> str, got {metadata!r}"
        )


def _to_host_array(name, value):
    """Return ``value`` as a little-endian NumPy array, or raise naming the tensor."""
    if not isinstance(name, str) or name == _METADATA_KEY:
        raise ValueError(f"write_safetensors: tensor names must be strings other than "
                         f"{_METADATA_KEY!r}, got {name!r}")
    if not isinstance(value, np.ndarray) and callable(getattr(value, "get", None)) \
            and hasattr(value, "__cuda_array_interface__"):
        value = value.get()  # CuPy (or another GPU array with the same API): copy to host
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(
            f"write_safetensors: tensor {name!r} must be a NumPy or CuPy array, "
            f"got {type(value).__name__}"
        )
    value = np.asarray(value)
    _dtype_code(name, value.dtype)  # fail early, before anything is written
    if value.dtype.byteorder == ">":  # the format is little-endian on every machine
        value = value.astype(value.dtype.newbyteorder("<"))
    return value


def _dtype_code(name, dtype):
    if dtype.name == "bfloat16" and dtype.itemsize == 2:  # e.g. ml_dtypes.bfloat16
        return "BF16"
    for code, known in _NUMPY_DTYPES.items():
        if dtype == known or dtype == known.newbyteorder(">"):
            return code
    raise TypeError(
        f"write_safetensors: tensor {name!r} has dtype {dtype}, which safetensors cannot "
        f"store; expected one of {', '.join(str(dt) for dt in _NUMPY_DTYPES.values())}"
    )


def _build_header(arrays, metadata):
    """Lay the tensors out back to back; return (header bytes, ordered (name, array))."""
    # Largest itemsize first (then by name, for a reproducible file): with the header
    # padded to 8 bytes, every tensor then starts at a multiple of its own itemsize.
    ordered = sorted(arrays.items(), key=lambda item: (-item[1].dtype.itemsize, item[0]))
    header = {_METADATA_KEY: metadata} if metadata else {}
    offset = 0
    for name, array in ordered:
        header[name] = {
            "dtype": _dtype_code(name, array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # spaces are valid JSON padding
    return encoded, ordered


def _write_payload(handle, header, ordered):
    handle.write(len(header).to_bytes(8, "little"))
    handle.write(header)
    for _, array in ordered:
        # A flat uint8 view writes the bytes without another full copy.
        handle.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
