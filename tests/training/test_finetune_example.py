"""examples/finetune_bert2bert.py: its data, its tokenization with text_target, its metric and
its Trainer recipe (the recipe's training itself is measured by benchmarks/bench_trainer.py)."""
import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import finetune_bert2bert as example  # noqa: E402

import minibertgen as mb  # noqa: E402


def test_examples_copy_or_reverse():
    rng = random.Random(0)
    for _ in range(50):
        source, target = example.make_example(rng)
        task, *words = source.split()
        assert target.split() == (words if task == "copy" else words[::-1])
        assert 2 <= len(words) <= 6


def test_dataset_labels_are_the_tokenized_targets(minilm_dir):
    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    data = example.make_dataset(tokenizer, 4, seed=3)
    pairs = [example.make_example(random.Random(3)) for _ in range(1)]
    assert data[0]["labels"] == tokenizer(pairs[0][1])["input_ids"]
    assert data[0]["input_ids"] == tokenizer(pairs[0][0])["input_ids"]
    assert data[0]["labels"][0] == 101 and data[0]["labels"][-1] == 102


def test_exact_match_metric(minilm_dir):
    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    want = tokenizer(["cat dog", "dog cat"], padding=True)["input_ids"]
    labels = np.where(np.array(want) == 0, -100, np.array(want))
    right = np.array([want[0] + [0, 0], want[0] + [0, 0]])  # the second one is wrong
    prediction = mb.trainer.EvalPrediction(predictions=right, label_ids=labels)
    assert example.exact_match_metric(tokenizer)(prediction) == {"exact_match": 0.5}


def test_recipe_builds_the_trainer_with_its_arguments(minilm_dir, tmp_path):
    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    model = example.build_model(mb, minilm_dir)
    args = example.parse_args(["--steps", "3", "--output-dir", str(tmp_path), "--eval-examples", "2"])
    trainer = example.recipe(mb, model, tokenizer, args, disable_tqdm=True, plot_curves=False)
    assert isinstance(trainer, mb.Seq2SeqTrainer) and len(trainer.train_dataset) == 3 * args.batch_size
    assert trainer.args.learning_rate == args.lr and trainer.args.warmup_steps == args.warmup
    assert model.config.decoder_start_token_id == 101 and model.generation_config.eos_token_id == 102
    assert isinstance(args, argparse.Namespace)
