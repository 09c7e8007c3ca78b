"""dispatch.py: the table in force is entered once per public entry point, and the speed
wing's environment options are read when a table is chosen, not when minibertgen is imported."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from minibertgen import dispatch
from minibertgen.optim import AdamW

ROOT = Path(__file__).resolve().parents[1]


class CountingVar:
    """Stands in for dispatch's context variable, counting how often a table is put in force."""

    def __init__(self, var):
        self.var, self.sets = var, 0

    def get(self):
        return self.var.get()

    def set(self, value):
        self.sets += 1
        return self.var.set(value)

    def reset(self, token):
        return self.var.reset(token)


def _bert2bert():
    half = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                pad_token_id=0)
    config = mb.EncoderDecoderConfig.from_encoder_decoder_configs(
        mb.BertConfig(**half), mb.BertGenerationConfig(**half, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    return mb.EncoderDecoderModel(config, seed=0)


@pytest.mark.parametrize("kernels", [True, False])
def test_each_entry_point_puts_the_table_in_force_once(monkeypatch, kernels):
    """An EncoderDecoderModel call used to enter its table 3 times (6 with labels: each half
    again) and generate() once per step; now a model call, a backward, an optimizer step
    and a whole generate() each enter it once (the reference, no table, needs no entering:
    None is already in force)."""
    model = _bert2bert().use_fast_kernels(kernels)
    once = 1 if kernels else 0
    counter = CountingVar(dispatch._ACTIVE)
    monkeypatch.setattr(dispatch, "_ACTIVE", counter)
    ids = np.full((2, 5), 3, dtype=np.int64)

    def entries(call):
        before = counter.sets
        result = call()
        return counter.sets - before, result

    assert entries(lambda: model(input_ids=ids, decoder_input_ids=ids))[0] == once
    count, out = entries(lambda: model(input_ids=ids, labels=ids))
    assert count == once
    assert entries(lambda: out.loss.backward())[0] == once
    optimizer = AdamW(model.parameters())
    assert entries(optimizer.step)[0] == once
    assert entries(lambda: model.generate(ids, max_new_tokens=5, min_new_tokens=5))[0] == once


def test_a_nested_entry_point_with_another_table_enters_it():
    """Entering once is for the same table: an entry point inside another whose model chose a
    different table (an assistant model on the reference) still runs with its own."""
    table = {"linear": lambda *a, **k: "fast"}
    with dispatch.using(table):
        assert dispatch.active_table() is table
        with dispatch.using(None):
            assert dispatch.active_table() is None
            assert mb.ops.linear(np.ones((1, 2)), np.ones((3, 2))).shape == (1, 3)
        assert mb.ops.linear(np.ones((1, 2)), np.ones((3, 2))) == "fast"


def test_environment_options_are_read_when_a_table_is_chosen():
    script = textwrap.dedent("""
        import os
        import minibertgen as mb
        from minibertgen.fast import preview, threads
        assert preview.ENABLED is None and threads.POOL is None, (preview.ENABLED, threads.POOL)  # not read at import
        os.environ["MINIBERTGEN_GPU_PREVIEW"] = "1"
        assert preview.enabled() is True  # read on first use (the CUDA table's choice)
        os.environ["MINIBERTGEN_CPU_POOL"] = "1"
        mb.BertGenerationEncoder(mb.BertGenerationConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=16), seed=0)
        print("pool", threads.POOL is not None, (os.cpu_count() or 1) >= 2)
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MINIBERTGEN_QUIET": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    made, cores = result.stdout.split()[1:]
    if cores == "True":
        pytest.importorskip("threadpoolctl")
        assert made == "True"  # the CPU table, chosen after the option was set, made the pool
