"""Saves under faults (issue 32): two writers into one directory, saves killed at seeded random
points.  What must hold: the directory then loads as one model or the other, exactly, or is
refused with IncompleteSaveError; never one model's config over another's weights; the
losing writer gets ConcurrentSaveError and writes nothing.

Children are forked from the test process (the models are built before the fork), so the
kills and the slowed renames never touch pytest itself.
"""
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from minibertgen.checkpoint import saving
from minibertgen.checkpoint.saving import SAVE_MARKER, ConcurrentSaveError, IncompleteSaveError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="fork and flock")
SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=32, is_decoder=True)
IDS = np.array([[2, 5, 7, 9, 11]])


def model(seed, eps):
    """Two models of one shape that differ in weights and in a config field the logits depend on,
    so that a mix of them would load without complaint."""
    return mb.BertGenerationDecoder(mb.BertGenerationConfig(**SMALL, layer_norm_eps=eps), seed=seed)


@pytest.fixture(scope="module")
def pair():
    a, b = model(0, 1e-12), model(1, 0.5)
    return {"A": (a, a(input_ids=IDS).logits), "B": (b, b(input_ids=IDS).logits)}


def which(directory, pair) -> str:
    """'A' or 'B': the model the directory loads as, config and weights both; fails on a mix."""
    loaded = mb.BertGenerationDecoder.from_pretrained(directory)
    eps = loaded.config.layer_norm_eps
    name = "A" if eps == 1e-12 else "B"
    np.testing.assert_allclose(loaded(input_ids=IDS).logits, pair[name][1], rtol=0, atol=0,
                               err_msg=f"the config of {name} over other weights: a mix")
    return name


def forked(work) -> int:
    """Run ``work()`` in a forked child: its exit status (0, or what work returns), -signal if killed."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = work() or 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_a_second_save_is_refused_while_the_first_swaps_its_files_in(tmp_path, pair, monkeypatch):
    first_waits, release = threading.Event(), threading.Event()
    real, owner = os.replace, []

    def slow_replace(source, target):
        if threading.current_thread() in owner:  # only the first save stops halfway
            first_waits.set()
            release.wait(30)
        real(source, target)

    monkeypatch.setattr(saving.os, "replace", slow_replace)
    first = threading.Thread(target=lambda: pair["A"][0].save_pretrained(tmp_path))
    owner.append(first)
    first.start()
    assert first_waits.wait(30)
    with pytest.raises(ConcurrentSaveError, match="another writer .* is writing it now"):
        pair["B"][0].save_pretrained(tmp_path)
    release.set()
    first.join(30)
    assert which(tmp_path, pair) == "A"  # the loser wrote nothing
    pair["B"][0].save_pretrained(tmp_path)  # the lock went with the first save
    assert which(tmp_path, pair) == "B"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name == SAVE_MARKER]


def test_saves_racing_from_two_processes_give_one_model_or_the_other(tmp_path, pair):
    """The issue's probe: two processes save at once, renames slowed; 1 round in 6 mixed."""
    real = os.replace

    def slow_replace(source, target):
        time.sleep(0.02)
        real(source, target)

    for round_ in range(6):
        go = tmp_path / f"go{round_}"

        def save(name):
            def work():
                saving.os.replace = slow_replace
                while not go.exists():
                    time.sleep(0.001)
                try:
                    pair[name][0].save_pretrained(tmp_path / "model")
                except ConcurrentSaveError:
                    return 3
                return 0
            return work

        results = {}
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, forked(save(n)))) for n in "AB"]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        go.touch()
        for thread in threads:
            thread.join(60)
        assert set(results.values()) <= {0, 3} and 0 in results.values(), results  # a clear error, or success
        winner = which(tmp_path / "model", pair)  # never a mix
        assert results[winner] == 0
    assert not (tmp_path / "model" / SAVE_MARKER).exists()


def test_saves_killed_at_random_points_never_load_as_a_mix(tmp_path, pair):
    """SIGKILL at a seeded random step of a save (a file flushed, a rename): the directory then
    loads as the old model or the new one, exactly, or is refused; the next save repairs it."""
    import signal

    rng = random.Random(32)
    for step in sorted(rng.sample(range(1, 12), 5)):
        directory = tmp_path / f"step{step}"
        pair["A"][0].save_pretrained(directory)

        def work(step=step):
            count = [0]
            real_fsync, real_replace = os.fsync, os.replace

            def counted(real):
                def call(*args):
                    count[0] += 1
                    if count[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args)
                return call

            saving.os.fsync, saving.os.replace = counted(real_fsync), counted(real_replace)
            pair["B"][0].save_pretrained(directory)

        status = forked(work)
        try:
            found = which(directory, pair)
        except IncompleteSaveError:
            found = "refused"
        assert found in ("A", "B", "refused")
        assert status == -signal.SIGKILL or found == "B"
        pair["B"][0].save_pretrained(directory)  # saving again repairs it and clears the leftovers
        assert which(directory, pair) == "B"
        assert not [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp") or p.name == SAVE_MARKER]
