"""Find the weight files of a checkpoint directory and load them into one dict.

Hugging Face checkpoints store weights in one of four layouts, tried in the order
transformers prefers them (safetensors first, because it cannot run code):

    model.safetensors                   one file
    model.safetensors.index.json        shards listed in {"weight_map": {name: file}}
    pytorch_model.bin                   one torch.save file
    pytorch_model.bin.index.json        torch.save shards
"""
import json
from pathlib import Path

from .errors import CheckpointError
from .safetensors_io import read_safetensors
from .saving import check_save_complete
from .torch_pickle import read_torch_bin

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
_SEARCH_ORDER = (SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE, TORCH_INDEX)
_TORCH_SUFFIXES = (".bin", ".pt", ".pth")
_MAX_NAME = 1024  # longest shard name (a relative path) we accept; each part at most 255 (NAME_MAX)


def find_weight_files(directory):
    """Return the weight files (``list[Path]``) of a checkpoint directory.

    For a sharded checkpoint these are the shards named by the index, sorted, each
    checked to exist. Raises FileNotFoundError naming the directory and the files
    looked for when there is none, or naming the shard that is missing.
    """
    files, _ = _locate(Path(directory))
    return files


def load_state_dict(directory_or_file):
    """Load a checkpoint into one flat ``dict[str, np.ndarray]``.

    Accepts a checkpoint directory, a ``.safetensors`` file, a torch ``.bin`` /
    ``.pt`` / ``.pth`` file, or a ``*.index.json`` of a sharded checkpoint. Shards
    are merged; a tensor name found in two files is a CheckpointError (which copy
    would be right is unknowable), as is a name the index lists but no shard holds.
    """
    path = Path(directory_or_file)
    index = None
    if path.is_dir():
        files, index = _locate(path)
    elif path.name.endswith(".index.json"):
        files, index = _shards_of(path), path
    elif not path.is_file():
        raise FileNotFoundError(f"load_state_dict: {path} does not exist")
    elif path.suffix == ".safetensors" or path.suffix in _TORCH_SUFFIXES:
        files = [path]
    else:
        raise ValueError(
            f"load_state_dict: don't know how to read {path}; expected a checkpoint directory, "
            f"a .safetensors file, a torch {'/'.join(_TORCH_SUFFIXES)} file or an .index.json"
        )
    state_dict = _merge(files)
    if index is not None:
        _check_index_complete(index, state_dict)
    return state_dict


def _locate(directory):
    """Return (weight files, index file or None) for a checkpoint directory."""
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist (or is not a directory)")
    check_save_complete(directory)  # never a config of one save over the weights of another
    for name in _SEARCH_ORDER:
        candidate = directory / name
        if candidate.is_file():
            if name.endswith(".index.json"):
                return _shards_of(candidate), candidate
            return [candidate], None
    raise FileNotFoundError(f"no weights found in {directory}: looked for {', '.join(_SEARCH_ORDER)}")


def _read_weight_map(index):
    """Parse an index file and return its weight_map (tensor name -> shard file name)."""
    if not index.is_file():
        raise FileNotFoundError(f"index file {index} does not exist")
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index}: not valid UTF-8 JSON ({exc})") from exc
    except RecursionError:
        raise CheckpointError(f"{index}: nested too deeply to be a checkpoint index") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
    ):
        raise CheckpointError(f"{index}: expected a \"weight_map\" object of tensor name -> shard file name")
    return weight_map


def _shards_of(index):
    """The shard files an index names, sorted; each must exist beside the index."""
    shards = []
    for shard_name in sorted(set(_read_weight_map(index).values())):
        # Shards live beside the index; a name that climbs out ("../x", "/etc/x")
        # would make a downloaded checkpoint read arbitrary files.
        if Path(shard_name).is_absolute() or ".." in Path(shard_name).parts:
            raise CheckpointError(f"{index}: shard name {_short(shard_name)} points outside the checkpoint "
                                  "directory")
        if len(shard_name) > _MAX_NAME or any(len(part) > 255 for part in Path(shard_name).parts):
            raise CheckpointError(f"{index}: shard name {_short(shard_name)} has {len(shard_name)} characters; "
                                  "expected a file name of at most 255 characters (path at most 1024)")
        shard = index.parent / shard_name
        try:
            if "\x00" in shard_name:
                raise ValueError("it holds a NUL character")
            exists = shard.is_file()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{index}: shard name {_short(shard_name)} is not a usable file name "
                                  f"({exc})") from None
        if not exists:
            raise FileNotFoundError(f"{index} lists shard {shard_name!r}, but {shard} does not exist")
        shards.append(shard)
    return shards


def _short(name, limit=80):
    """A name for an error message: repr, cut in the middle when long."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def _merge(files):
    state_dict, origin = {}, {}
    for file in files:
        for name, tensor in _read_weight_file(file).items():
            if name in state_dict:
                raise CheckpointError(
                    f"tensor {name!r} appears in both {origin[name]} and {file}; "
                    "a checkpoint must store each tensor once"
                )
            state_dict[name], origin[name] = tensor, file
    return state_dict


def _check_index_complete(index, state_dict):
    for name, shard_name in _read_weight_map(index).items():
        if name not in state_dict:
            raise CheckpointError(
                f"{index} lists tensor {name!r} in shard {shard_name!r}, but no shard holds it"
            )


def _read_weight_file(file):
    if file.suffix == ".safetensors":
        return read_safetensors(file)
    if file.suffix in _TORCH_SUFFIXES:
        return read_torch_bin(file)
    raise CheckpointError(
        f"{file}: unknown weight file type; expected .safetensors or {'/'.join(_TORCH_SUFFIXES)}"
    )
