"""Training on CuPy (device=0): the same code as on NumPy, checked against torch autograd on
the CPU through one checkpoint saved by transformers (skips where there is no GPU; CI has none).

The bar is the CPU suite's (test_model_backward_live.py): loss within 1e-5, every gradient
allclose(rtol=1e-4, atol=1e-5 x the global gradient norm); AdamW steps as test_optim.py.
On the GPU the training table is the plain reference (the CUDA kernels have no backward),
and the embedding's scatter-add is cupyx.scatter_add, whose float32 sums are not
deterministic in order: still within float32 rounding of torch's.
"""
import numpy as np
import pytest

from conftest import needs_gpu
from minibertgen.backend import to_numpy
from minibertgen.optim import AdamW, clip_grad_norm_

pytestmark = [needs_gpu,
              pytest.mark.filterwarnings("ignore:To copy construct from a tensor")]

# the CPU suite's models, inputs and comparison (its module skips where torch is missing)
from test_model_backward_live import IDS, MASK, LABELS, compare_with_torch, seq2seq, seq2seq_losses  # noqa: E402

LABELS = LABELS[:, :6]


def torch_loss(theirs):
    import torch

    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    return theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss


def check_gradients(tmp_path, device, **case):
    ours, theirs = seq2seq(tmp_path, device=device, **case)
    compare_with_torch(ours, theirs, *seq2seq_losses(ours, theirs, LABELS))


def check_adamw_steps(tmp_path, device, steps=5):
    import torch

    ours, theirs = seq2seq(tmp_path, device=device)
    ours.train()
    theirs.train()  # dropout is 0 in this config
    mine = AdamW(ours.parameters(), lr=1e-3, weight_decay=0.01)
    reference = torch.optim.AdamW(theirs.parameters(), lr=1e-3, weight_decay=0.01)
    for step in range(steps):
        loss = ours(input_ids=IDS, attention_mask=MASK, labels=LABELS).loss
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        mine.step()
        mine.zero_grad()
        their_loss = torch_loss(theirs)
        their_loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        reference.step()
        reference.zero_grad()
        assert abs(float(to_numpy(loss)) - float(their_loss.detach())) <= 1e-4 * abs(float(their_loss.detach())), step
    for name, parameter in theirs.named_parameters():
        np.testing.assert_allclose(to_numpy(ours.get_parameter(name).data), parameter.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("case", [{}, {"tie": True}, {"position": "relative_key_query"}])
def test_bert2bert_gradients_on_gpu_equal_torch(tmp_path, case):
    check_gradients(tmp_path, 0, **case)


def test_adamw_steps_on_gpu_equal_torch(tmp_path):
    check_adamw_steps(tmp_path, 0)


def check_dropout(tmp_path, device):
    from minibertgen.ops import dropout_mask

    ours, _ = seq2seq(tmp_path, device=device)
    xp = ours._xp()
    mask = to_numpy(dropout_mask((400, 500), 0.25, xp.random.default_rng(1), np.float32))
    kept = mask > 0
    assert abs(kept.mean() - 0.75) < 0.005  # 200000 draws: std of the mean ~0.001
    np.testing.assert_allclose(mask[kept], 1 / 0.75, rtol=1e-6)
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    first, again = to_numpy(ours(**kwargs).logits), to_numpy(ours(**kwargs).logits)
    np.testing.assert_array_equal(first, again)  # eval mode (the default): no dropout
    for half in (ours.config.encoder, ours.config.decoder):
        half.hidden_dropout_prob = half.attention_probs_dropout_prob = 0.3
    ours.train()
    seeded = [float(to_numpy(ours.manual_seed(7)(**kwargs).loss)) for _ in range(2)]
    assert seeded[0] == seeded[1]  # the same seed draws the same masks
    assert float(to_numpy(ours.manual_seed(8)(**kwargs).loss)) != seeded[0]


def test_dropout_on_gpu_keeps_the_right_fraction_and_follows_the_seed(tmp_path):
    check_dropout(tmp_path, 0)
