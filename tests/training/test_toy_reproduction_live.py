"""Reproduce tests/fixtures/generation/train_toy_bert2bert.py: the same initial weights (saved
by transformers), the same batches, the same optimiser and schedule, in minibertgen and in
torch: the first 50 losses agree within 1e-5 (issue 15; the run is chaotic after ~85 steps,
where torch with another thread count or float64 diverges from itself too)."""
import random
import sys

import numpy as np
import pytest

from conftest import FIXTURES, require_module

import minibertgen as mb
from minibertgen.optim import AdamW, LambdaLR, clip_grad_norm_

torch = require_module("torch")
require_module("transformers")
sys.path.insert(0, str(FIXTURES / "generation"))
import train_toy_bert2bert as script  # noqa: E402  (the fixture's own script: its model, data, schedule)

STEPS, TOTAL, BATCH = 50, 350, 64


def schedule_factor(step):
    return min(1.0, (step + 1) / 50) * (1 - step / TOTAL)  # the script's LambdaLR


def batches():
    rng = random.Random(0)
    for _ in range(STEPS):
        pairs = [script.make_example(rng) for _ in range(BATCH)]
        yield script.pad([p[0] for p in pairs], script.PAD).numpy(), script.pad([p[1] for p in pairs], -100).numpy()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_first_fifty_losses_equal_torch(tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    try:
        theirs = script.build_model()
        theirs.save_pretrained(tmp_path)  # the initial weights, for both
        optimizer = torch.optim.AdamW(theirs.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor)
        theirs.train()
        reference = []
        for ids, labels in batches():
            ids, labels = torch.tensor(ids), torch.tensor(labels)
            loss = theirs(input_ids=ids, attention_mask=(ids != script.PAD).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            reference.append(loss.item())
    finally:
        torch.set_num_threads(threads)

    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path).train()
    optimizer = AdamW(ours.parameters(), lr=3e-3)
    schedule = LambdaLR(optimizer, schedule_factor)
    losses = []
    for ids, labels in batches():
        loss = ours(input_ids=ids, attention_mask=(ids != script.PAD).astype(np.int64), labels=labels).loss
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5)
    assert losses[-1] < losses[0] - 0.3  # it learns (3.44 -> 2.98 in 50 steps)
