"""examples/finetune_bert2bert.py: its data, its batches and its stop on a non-finite loss."""
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import finetune_bert2bert as example  # noqa: E402


def test_examples_copy_or_reverse():
    rng = random.Random(0)
    for _ in range(50):
        source, target = example.make_example(rng)
        task, *words = source.split()
        assert target.split() == (words if task == "copy" else words[::-1])
        assert 2 <= len(words) <= 6


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_the_step_named(value):
    with pytest.raises(SystemExit, match=f"step 17: the loss is {value}"):
        example.check_finite(np.float32(value), 17)
    assert example.check_finite(np.float32(2.5), 3) == 2.5


def test_batches_pad_labels_with_ignore_index(minilm_dir):
    import minibertgen as mb

    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    ids, mask, labels = example.make_batch(tokenizer, [("copy cat dog", "cat dog"), ("reverse a b c", "c b a")])
    assert ids.shape == mask.shape and labels.shape[0] == 2
    assert (labels[0] == -100).sum() == 1 and (labels[1] != -100).all()  # [CLS] cat dog [SEP] + one pad
    assert ids[0, 0] == 101 and labels[0, 0] == 101
