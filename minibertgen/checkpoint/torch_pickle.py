"""Read ``pytorch_model.bin`` files (``torch.save`` zip format) without torch.

A torch checkpoint is a zip archive:

    <prefix>/data.pkl      a pickle of the state dict; each tensor in it is a call
                           ``torch._utils._rebuild_tensor_v2(storage, offset, size,
                           stride, ...)`` whose ``storage`` is a *persistent id*
                           ``('storage', torch.FloatStorage, key, location, numel)``
    <prefix>/data/<key>    the raw bytes of storage ``key`` (byte order in
                           <prefix>/byteorder, little-endian when absent)

Plain ``pickle.load`` would import and call whatever the pickle names, so a file can
run arbitrary code (``os.system``, ``builtins.eval``, ...). Here the unpickler's
``find_class`` hands out only our own NumPy stand-ins for the handful of names that
rebuild tensors, and refuses everything else with UnsafePickleError *before* any
import happens. Nothing from torch is imported or needed.
"""
import io
import pickle
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import CheckpointError, UnsafePickleError
from .safetensors_io import _bf16_to_float32

# data.pkl is the pickled dict of tensor descriptions (a few MB for the largest models);
# a larger declared size is refused before anything is inflated.
_MAX_PICKLE_BYTES = 256 * 1024 * 1024
# Elements that copies of views may take out of one storage: _COPY_FACTOR x its size, plus
# a small allowance for tiny expanded tensors (a stride-0 view copies one element many times).
_COPY_FACTOR = 4
_COPY_ALLOWANCE = 1 << 20

# torch storage class -> dtype of its elements in the file. BFloat16 is read as raw
# uint16 bits and widened to float32 after rebuilding (NumPy has no bfloat16).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("f8"),
    "FloatStorage": np.dtype("f4"),
    "HalfStorage": np.dtype("f2"),
    "BFloat16Storage": np.dtype("u2"),
    "LongStorage": np.dtype("i8"),
    "IntStorage": np.dtype("i4"),
    "ShortStorage": np.dtype("i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """What ``find_class`` returns for ``torch.FloatStorage`` etc.: just a name tag."""

    def __init__(self, name):
        self.name = name
        self.is_bf16 = name == "BFloat16Storage"


class _Storage:
    """A storage read from the zip: a flat NumPy array plus where it came from."""

    def __init__(self, key, array, is_bf16):
        self.key, self.array, self.is_bf16 = key, array, is_bf16


class _TensorUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts of tensors and nothing else."""

    def __init__(self, data, archive, prefix, path, byteorder):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._path = archive, prefix, path
        self._byteorder = byteorder
        self._storages = {}  # key -> _Storage; tensors that share storage share this
        self._copied = {}  # key -> elements copied out of that storage so far
        self._allowed = {
            ("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
        }

    def find_class(self, module, name):
        # Every global the pickle mentions passes through here (GLOBAL, STACK_GLOBAL,
        # INST, OBJ and the copyreg extension opcodes). Nothing is ever imported.
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise CheckpointError(
                f"{self._path}: tensors stored as torch.{name} are not supported; "
                f"supported storages: {', '.join(sorted(_STORAGE_DTYPES))}"
            )
        raise UnsafePickleError(self._path, module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _is_count(pid[4])):
            raise CheckpointError(
                f"{self._path}: unexpected persistent id {pid!r} in data.pkl; expected "
                "('storage', torch.<Type>Storage, key, location, numel)"
            )
        _, storage_type, key, _location, numel = pid  # location (cpu/cuda) is irrelevant here
        if key not in self._storages:
            self._storages[key] = self._read_storage(storage_type, key, numel)
        return self._storages[key]

    def _read_storage(self, storage_type, key, numel):
        member = f"{self._prefix}data/{key}"
        dtype = _STORAGE_DTYPES[storage_type.name].newbyteorder(self._byteorder)
        expected = numel * dtype.itemsize
        try:
            declared = self._archive.getinfo(member).file_size
        except KeyError:
            message = f"{self._path}: storage {member!r} is missing from the archive"
            raise CheckpointError(message) from None
        # Checked before reading: a compressed member is inflated whole, so a tiny file
        # could otherwise claim gigabytes (torch writes each storage at exactly numel x itemsize).
        if declared != expected:
            raise CheckpointError(
                f"{self._path}: storage {member!r} should hold {numel} x {storage_type.name} "
                f"({expected} bytes) but the archive says it has {declared} bytes"
                + (" (truncated?)" if declared < expected else "")
            )
        raw = _read_member(self._path, self._archive, member, expected)
        array = np.frombuffer(raw, dtype=dtype, count=numel)
        return _Storage(key, array, storage_type.is_bf16)

    def _count_copy(self, storage, size):
        """Copies out of one storage may add up to a few times its size (views that
        overlap, such as ``expand``, copy some elements more than once), never more: a
        few hundred bytes of pickle could otherwise ask for gigabytes of copies of one
        small storage (a stride-0 view of 4 floats as 10000 x 10000)."""
        copied = self._copied.get(storage.key, 0) + int(np.prod(size, dtype=object))
        allowed = _COPY_FACTOR * storage.array.size + _COPY_ALLOWANCE
        if copied > allowed:
            raise CheckpointError(
                f"{self._path}: tensor of size {tuple(size)} built from storage {storage.key!r} would bring the "
                f"elements copied out of it to {copied}, but the storage holds {storage.array.size}: views that "
                f"repeat a storage more than {_COPY_FACTOR} times (stride-0 or overlapping) are refused"
            )
        self._copied[storage.key] = copied

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, *_grad_hooks_metadata):
        # requires_grad, backward hooks and tensor metadata mean nothing to NumPy.
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_parameter(self, data, *_grad_hooks_state):
        if not isinstance(data, np.ndarray):
            raise CheckpointError(
                f"{self._path}: a Parameter wraps {type(data).__name__}, not a tensor"
            )
        return data

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        _check_view(self._path, storage, storage_offset, size, stride)
        source = storage.array
        if int(np.prod(size, dtype=object)) == 0:
            tensor = np.empty(size, dtype=source.dtype)
        else:
            view = np.lib.stride_tricks.as_strided(
                source[storage_offset:], shape=size,
                strides=[step * source.itemsize for step in stride], writeable=False,
            )
            # Own the memory unless the tensor is exactly its whole storage: a view of a
            # shared or larger storage would otherwise keep all of it alive.
            spans_storage = storage_offset == 0 and view.size == source.size
            if spans_storage and view.flags.c_contiguous:
                tensor = view
            else:
                self._count_copy(storage, size)
                tensor = view.copy()
        if not tensor.dtype.isnative:
            tensor = tensor.astype(tensor.dtype.newbyteorder("="))
        if storage.is_bf16:
            tensor = _bf16_to_float32(tensor)
        tensor.flags.writeable = False  # read-only, as safetensors tensors are
        return tensor


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_view(path, storage, offset, size, stride):
    """Refuse a (offset, size, stride) that is malformed or reaches past its storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"{path}: a tensor is built from {type(storage).__name__}, not a storage")
    well_formed = (
        _is_count(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
        and len(size) == len(stride) and all(map(_is_count, size + stride))
    )
    if not well_formed:
        raise CheckpointError(
            f"{path}: tensor on storage {storage.key!r} has a malformed view "
            f"(offset={offset!r}, size={size!r}, stride={stride!r})"
        )
    if 0 in size:
        return
    last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
    if last >= storage.array.size:
        raise CheckpointError(
            f"{path}: tensor of size {size} at offset {offset} with stride {stride} needs "
            f"element {last} of storage {storage.key!r}, which has {storage.array.size}"
        )


def read_torch_bin(path):
    """Load a ``torch.save`` checkpoint (zip format, torch >= 1.6) as ``dict[str, np.ndarray]``.

    Safe: the pickle may only rebuild tensors and (Ordered)dicts; any other global
    raises UnsafePickleError naming it, and nothing from the file is executed.
    Tensors come back C-contiguous and read-only (as from read_safetensors; copy
    one to modify it) in their stored dtype, except bfloat16, which becomes float32
    (exact; NumPy has no bfloat16). Views that share a storage are
    rebuilt independently with their own offset and strides.

    A nested checkpoint such as ``{"state_dict": {...}, "epoch": 3}`` is flattened:
    if all tensors live in one dict, its keys are returned as they are; if they are
    spread over several dicts, the keys are the dotted paths from the top. Simple
    leaves (None, bool, int, float, str, and lists/tuples of those) are ignored;
    anything else is an error rather than being silently dropped.
    """
    path = Path(path)
    with _open_archive(path) as archive:
        prefix = _archive_prefix(path, archive)
        byteorder = _byteorder(path, archive, prefix)
        pickled = _read_member(path, archive, f"{prefix}data.pkl", _MAX_PICKLE_BYTES)
        unpickler = _TensorUnpickler(pickled, archive, prefix, path, byteorder)
        try:
            loaded = unpickler.load()
            return _flatten_tensors(path, loaded)
        except CheckpointError:
            raise
        except RecursionError:
            raise CheckpointError(f"{path}: data.pkl is nested too deeply to be a state dict") from None
        except (pickle.UnpicklingError, EOFError, TypeError, IndexError, KeyError, ValueError,
                AttributeError, UnicodeDecodeError) as exc:  # ValueError: e.g. EXT1, an unregistered extension
            raise CheckpointError(f"{path}: data.pkl is not a valid tensor pickle ({exc!r})") from exc


def _read_member(path, archive, member, limit):
    """The bytes of one zip member, refused unread when the archive says it is over ``limit``."""
    try:
        declared = archive.getinfo(member).file_size
    except KeyError:
        raise CheckpointError(f"{path}: {member!r} is missing from the archive") from None
    if declared > limit:
        raise CheckpointError(f"{path}: {member!r} says it holds {declared} bytes, over the {limit} expected")
    try:
        with archive.open(member) as handle:
            data = handle.read(limit + 1)  # never more than the limit, whatever the stream inflates to
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: {member!r} is corrupt ({exc})") from exc
    if len(data) != declared:
        raise CheckpointError(f"{path}: {member!r} has {len(data)} bytes, but the archive says {declared}")
    return data


def _open_archive(path):
    if not path.is_file():
        raise FileNotFoundError(f"torch checkpoint {path} does not exist (or is not a file)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if zipfile.is_zipfile(path):
        try:
            return zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{path}: corrupt zip archive ({exc})") from exc
    if magic.startswith(b"PK"):
        raise CheckpointError(f"{path}: starts like a zip archive but is corrupt or truncated")
    if magic.startswith(b"\x80"):
        raise CheckpointError(
            f"{path}: this is the legacy (non-zip) torch.save format, which is not "
            "supported; re-save it with torch>=1.6 (torch.save(torch.load(f), f)) or "
            "convert it to safetensors"
        )
    raise CheckpointError(f"{path}: not a torch checkpoint (no zip signature, first bytes {magic!r})")


def _archive_prefix(path, archive):
    """The folder holding data.pkl: torch names it after the file ('archive/', 't/', ...)."""
    candidates = [name[: -len("data.pkl")] for name in archive.namelist()
                  if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(candidates) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one <folder>/data.pkl in the zip archive, found "
            f"{len(candidates)} (is this a torch.save checkpoint?)"
        )
    return candidates[0]


def _byteorder(path, archive, prefix):
    if f"{prefix}byteorder" not in archive.namelist():
        return "<"  # older torch wrote no byteorder record and only little-endian data
    order = _read_member(path, archive, f"{prefix}byteorder", 16).decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise CheckpointError(f"{path}: byteorder record says {order!r}, expected 'little' or 'big'")
    return "<" if order == "little" else ">"


def _flatten_tensors(path, loaded):
    """Collect every tensor in nested dicts; see read_torch_bin for the key rule."""
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"{path}: expected the checkpoint to hold a dict of tensors, got {type(loaded).__name__}"
        )
    found = []  # (path of keys, tensor)
    _collect(path, loaded, (), found)
    parents = {keys[:-1] for keys, _ in found}
    if len(parents) <= 1:
        return {str(keys[-1]): tensor for keys, tensor in found}
    return {".".join(map(str, keys)): tensor for keys, tensor in found}


def _collect(path, mapping, prefix, found):
    for key, value in mapping.items():
        keys = prefix + (key,)
        if isinstance(value, np.ndarray):
            if not isinstance(key, str):
                raise CheckpointError(f"{path}: tensor stored under non-string key {key!r}")
            found.append((keys, value))
        elif isinstance(value, dict):
            _collect(path, value, keys, found)
        elif not _is_simple(value):
            raise CheckpointError(
                f"{path}: entry {'.'.join(map(str, keys))!r} is a {type(value).__name__}, "
                "neither a tensor, a dict, nor a simple value (int/float/str/bool/None)"
            )


def _is_simple(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(map(_is_simple, value))
