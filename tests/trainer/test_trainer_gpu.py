"""The Trainer on CuPy (device="cuda"): the same run as on the CPU, checkpoints that resume,
and a checkpoint saved from the GPU that loads on the CPU.  Skips where there is no GPU
(CI has none); benchmarks/gpu_session.sh runs it where a device is lent.

The bar: per-step losses within 1e-5 relative of the CPU run (the training table on CuPy
is the plain reference; cuBLAS and cupyx.scatter_add add float32 sums in their own order),
final weights within 1e-4 of the CPU run's after six AdamW steps.  Dropout is 0 in these
models, so no random draw differs between the devices.
"""
import numpy as np
import pytest

from conftest import needs_gpu
from test_trainer import trainer_for

import minibertgen as mb
from minibertgen.backend import to_numpy

pytestmark = [needs_gpu,
              pytest.mark.filterwarnings("ignore::UserWarning")]


def _losses(trainer):
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_a_gpu_run_is_the_cpu_run(tmp_path):
    cpu = trainer_for(tmp_path / "cpu", max_steps=6, save_strategy="no")
    cpu.train()
    gpu = trainer_for(tmp_path / "gpu", max_steps=6, save_strategy="no", device="cuda")
    gpu.train()
    assert gpu.model.device.kind == "cuda"
    np.testing.assert_allclose(_losses(gpu), _losses(cpu), rtol=1e-5)
    theirs = cpu.model.state_dict()
    for name, value in gpu.model.state_dict().items():
        np.testing.assert_allclose(to_numpy(value), theirs[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_a_resumed_gpu_run_is_the_uninterrupted_one(tmp_path):
    whole = trainer_for(tmp_path / "whole", max_steps=6, save_steps=2, device="cuda")
    whole.train()
    resumed = trainer_for(tmp_path / "resumed", max_steps=6, save_steps=2, device="cuda")
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "out" / "checkpoint-4"))
    assert _losses(resumed) == _losses(whole)  # (the history up to step 4 comes from the checkpoint)
    theirs = whole.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), to_numpy(theirs[name]), err_msg=name)


def test_a_checkpoint_saved_from_the_gpu_loads_on_the_cpu(tmp_path):
    trainer = trainer_for(tmp_path, max_steps=2, save_steps=2, device="cuda")
    trainer.train()
    loaded = mb.EncoderDecoderModel.from_pretrained(tmp_path / "out" / "checkpoint-2")
    assert loaded.device.kind == "cpu"
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], to_numpy(value), err_msg=name)
