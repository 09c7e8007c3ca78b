"""Checkpoints as transformers lays them out, without pickle, written atomically.

    output_dir/checkpoint-N/
        model.safetensors, config.json, generation_config.json   (save_pretrained: loads in transformers)
        optimizer.safetensors + optimizer.json   AdamW's moments by parameter position, its groups and steps
        scheduler.json                           the LambdaLR's position
        rng_state.json                           Python's, NumPy's, minibertgen's and dropout's generators
        trainer_state.json, training_args.json   as transformers writes them (args as JSON, not pickle)
        tokenizer files                          when the Trainer was given a processing_class

A checkpoint is staged whole in a hidden directory beside it
(``.checkpoint-N.<pid>.<hex>.tmp``) and renamed to ``checkpoint-N`` only when every file is
written: a save that is killed leaves a hidden directory (removed by the next save), never
a ``checkpoint-N`` that loads half-new.  ``save_total_limit`` prunes the oldest, keeping
the best one when load_best_model_at_end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from ..backend import to_numpy
from ..checkpoint.safetensors_io import read_safetensors, write_safetensors
from .rng_state import load_rng_state, save_rng_state
from .state import TrainerState

__all__ = ["PREFIX", "save_checkpoint", "load_checkpoint", "sorted_checkpoints", "rotate_checkpoints",
           "last_checkpoint"]

PREFIX = "checkpoint"
_STAGING = re.compile(rf"^\.{PREFIX}-\d+\.(?P<pid>\d+)\.[0-9a-f]{{32}}\.tmp$")
_REQUIRED = ("model.safetensors", "config.json", "trainer_state.json", "optimizer.safetensors", "optimizer.json",
             "scheduler.json", "rng_state.json")


def save_checkpoint(trainer, output_dir) -> Path:
    """Write checkpoint-<global_step> into output_dir as one rename; returns its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(output_dir)
    final = output_dir / f"{PREFIX}-{trainer.state.global_step}"
    staging = output_dir / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        _write_files(trainer, staging)
        _swap_in(staging, final)
    finally:
        if staging.exists():  # only when something failed: the hidden directory goes
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _write_files(trainer, directory: Path) -> None:
    trainer.model.save_pretrained(directory)
    if trainer.processing_class is not None and hasattr(trainer.processing_class, "save_pretrained"):
        trainer.processing_class.save_pretrained(directory)
    _save_optimizer(trainer.optimizer, directory)
    _write_json(directory / "scheduler.json", trainer.lr_scheduler.state_dict())
    _write_json(directory / "rng_state.json", save_rng_state(trainer.model))
    (directory / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    trainer.state.save_to_json(directory / "trainer_state.json")
    for path in directory.iterdir():  # on disk before the rename makes the checkpoint visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_in(staging: Path, final: Path) -> None:
    if final.exists():  # the same step saved again: the old one goes only once the new one is whole
        old = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, final)
    descriptor = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_stale_staging(output_dir: Path) -> None:
    for entry in output_dir.iterdir():
        match = _STAGING.match(entry.name)
        if match and entry.is_dir() and not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers: a save of this process that failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _save_optimizer(optimizer, directory: Path) -> None:
    """Moments in safetensors (state.<i>.exp_avg / exp_avg_sq), the rest in JSON."""
    saved = optimizer.state_dict()
    tensors, steps = {}, {}
    for index, moments in saved["state"].items():
        steps[str(index)] = int(moments["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"state.{index}.{key}"] = to_numpy(moments[key])  # (laid out in row order one at a time, as written)
    write_safetensors(tensors, directory / "optimizer.safetensors", {"format": "minibertgen-adamw"})
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in saved["param_groups"]]
    _write_json(directory / "optimizer.json", {"param_groups": groups, "steps": steps})


def _load_optimizer(optimizer, directory: Path) -> None:
    meta = json.loads((directory / "optimizer.json").read_text(encoding="utf-8"))
    tensors = read_safetensors(directory / "optimizer.safetensors")
    state = {int(i): {"step": step, "exp_avg": tensors[f"state.{i}.exp_avg"],
                      "exp_avg_sq": tensors[f"state.{i}.exp_avg_sq"]} for i, step in meta["steps"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def check_checkpoint(directory) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={str(directory)!r}: no such checkpoint directory")
    missing = [name for name in _REQUIRED if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"resume_from_checkpoint={str(directory)!r}: not a minibertgen Trainer checkpoint "
                         f"(missing {missing})")
    return directory


def load_checkpoint(trainer, directory) -> TrainerState:
    """Restore the model, optimiser, schedule and generators saved in ``directory``."""
    directory = check_checkpoint(directory)
    load_model_weights(trainer.model, directory)
    _load_optimizer(trainer.optimizer, directory)
    trainer.lr_scheduler.load_state_dict(json.loads((directory / "scheduler.json").read_text(encoding="utf-8")))
    load_rng_state(json.loads((directory / "rng_state.json").read_text(encoding="utf-8")), trainer.model)
    return TrainerState.load_from_json(directory / "trainer_state.json")


def load_model_weights(model, directory) -> None:
    """The weights of a checkpoint's model.safetensors, copied into ``model`` in place."""
    model.load_state_dict(read_safetensors(Path(directory) / "model.safetensors"), strict=True)


def sorted_checkpoints(output_dir, best=None) -> list:
    """checkpoint-N directories by N, oldest first; the best one moved to the end but one
    (as transformers does, so pruning keeps it)."""
    found = []
    for path in Path(output_dir).glob(f"{PREFIX}-*"):
        match = re.fullmatch(rf"{PREFIX}-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match[1]), str(path)))
    ordered = [path for _, path in sorted(found)]
    if best is not None and str(Path(best)) in ordered:
        i = ordered.index(str(Path(best)))
        for j in range(i, len(ordered) - 2):
            ordered[j], ordered[j + 1] = ordered[j + 1], ordered[j]
    return ordered


def rotate_checkpoints(output_dir, limit, best=None) -> None:
    """Delete the oldest checkpoints beyond ``limit`` (never the best, nor the last)."""
    if limit is None or limit <= 0:
        return
    ordered = sorted_checkpoints(output_dir, best)
    if best is not None and limit == 1 and ordered and ordered[-1] != str(Path(best)):
        limit = 2  # keep the last one too, so the run can resume
    for path in ordered[: max(0, len(ordered) - limit)]:
        shutil.rmtree(path, ignore_errors=True)


def last_checkpoint(output_dir):
    """The newest checkpoint-N in output_dir, or None (resume_from_checkpoint=True)."""
    ordered = sorted_checkpoints(output_dir) if Path(output_dir).is_dir() else []
    return ordered[-1] if ordered else None
