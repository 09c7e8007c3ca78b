"""minibertgen's Seq2SeqTrainer against transformers' Seq2SeqTrainer, live: the same tiny
bert2bert (saved by transformers, dropout 0), the same tokenized data, full-batch steps
(so shuffling cannot differ): per-step loss, learning rate and gradient norm, eval_loss,
predict_with_generate ids, the checkpoint layout, resuming, freezing."""
import json

import numpy as np
import pytest

from conftest import require_module
from trainer_cases import pairs, save_tiny_bert2bert, tokenized, write_vocab

import minibertgen as mb

torch = require_module("torch")
T = require_module("transformers")
require_module("accelerate")  # transformers' Trainer needs it

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

ARGS = dict(per_device_train_batch_size=8, per_device_eval_batch_size=4, max_steps=6, learning_rate=2e-2,
            warmup_steps=2, weight_decay=0.01, logging_steps=1, eval_strategy="steps", eval_steps=3, save_steps=3,
            predict_with_generate=True, generation_max_length=8, report_to="none", seed=0, disable_tqdm=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return save_tiny_bert2bert(T, torch, write_vocab(directory))


def run(lib, saved, output_dir, freeze=None, train_size=8, resume=None, **overrides):
    tokenizer = lib.BertTokenizer.from_pretrained(saved) if lib is T else mb.BertTokenizer(str(saved / "vocab.txt"))
    model = lib.EncoderDecoderModel.from_pretrained(saved)
    if freeze is not None:
        for name, param in model.named_parameters():
            if name.startswith(freeze):
                param.requires_grad = False
    extra = {"use_cpu": True} if lib is T else {"plot_curves": False}
    args = lib.Seq2SeqTrainingArguments(output_dir=str(output_dir), **{**ARGS, **overrides}, **extra)
    trainer = lib.Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized(tokenizer, pairs(train_size, 0)),
                                 eval_dataset=tokenized(tokenizer, pairs(4, 1)), processing_class=tokenizer,
                                 data_collator=lib.DataCollatorForSeq2Seq(tokenizer, model=model))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.fixture(scope="module")
def both(saved, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    theirs, ours = run(T, saved, out / "theirs"), run(mb, saved, out / "ours")
    return theirs, ours, out


def steps(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def weights(model):
    return {name: np.array(value.detach().numpy() if hasattr(value, "detach") else value)
            for name, value in model.state_dict().items()}


def test_per_step_loss_lr_grad_norm_and_eval_loss(both):
    theirs, ours, _ = both
    assert steps(ours, "step") == steps(theirs, "step")
    assert steps(ours, "learning_rate") == pytest.approx(steps(theirs, "learning_rate"), rel=1e-12)
    # both round the logged loss to 4 digits: one unit of the last digit is rounding, not a difference
    np.testing.assert_allclose(steps(ours, "loss"), steps(theirs, "loss"), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(steps(ours, "grad_norm"), steps(theirs, "grad_norm"), rtol=1e-4)
    np.testing.assert_allclose(steps(ours, "eval_loss"), steps(theirs, "eval_loss"), rtol=1e-5)
    assert steps(ours, "loss")[-1] < steps(ours, "loss")[0] - 0.3  # it learns
    assert steps(ours, "epoch") == steps(theirs, "epoch")


def test_predict_with_generate_ids(both):
    theirs, ours, _ = both
    mine = ours.predict(tokenized(ours.processing_class, pairs(6, 2)))
    reference = theirs.predict(tokenized(theirs.processing_class, pairs(6, 2)))
    np.testing.assert_array_equal(mine.predictions, reference.predictions)
    np.testing.assert_array_equal(mine.label_ids, reference.label_ids)
    assert mine.metrics["test_loss"] == pytest.approx(reference.metrics["test_loss"], rel=1e-5)


def test_checkpoint_layout_and_model_loads_in_transformers(both):
    theirs, ours, out = both
    pickled = {"optimizer.pt": {"optimizer.safetensors", "optimizer.json"}, "scheduler.pt": {"scheduler.json"},
               "rng_state.pth": {"rng_state.json"}, "training_args.bin": {"training_args.json"}}
    for step in (3, 6):
        their_files = {p.name for p in (out / "theirs" / f"checkpoint-{step}").iterdir()}
        our_files = {p.name for p in (out / "ours" / f"checkpoint-{step}").iterdir()}
        expected = set().union(*(pickled.get(name, {name}) for name in their_files))
        assert our_files == expected
        state = json.loads((out / "ours" / f"checkpoint-{step}" / "trainer_state.json").read_text())
        their_state = json.loads((out / "theirs" / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == their_state["global_step"] == step
        assert [sorted(e) for e in state["log_history"]] == [sorted(e) for e in their_state["log_history"]]
    loaded = T.EncoderDecoderModel.from_pretrained(out / "ours" / "checkpoint-6")
    ours_now, reference = weights(ours.model), weights(loaded)
    for name, value in ours_now.items():
        np.testing.assert_array_equal(reference[name], value, err_msg=name)
    final = weights(theirs.model)
    total = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in final.values()))
    for name, value in ours_now.items():  # six AdamW steps later, still transformers' weights
        np.testing.assert_allclose(value, final[name], rtol=1e-4, atol=1e-5 * total, err_msg=name)


def test_resume_from_a_middle_checkpoint_equals_the_uninterrupted_run(both, saved, tmp_path):
    _, ours, out = both
    resumed = run(mb, saved, tmp_path, resume=str(out / "ours" / "checkpoint-3"))
    uninterrupted = [e for e in ours.state.log_history if "loss" in e]
    again = [e for e in resumed.state.log_history if "loss" in e]
    assert [e["step"] for e in again] == [1, 2, 3, 4, 5, 6]  # steps 1-3 from the checkpoint's trainer_state.json
    assert [(e["loss"], e["grad_norm"]) for e in again] == [(e["loss"], e["grad_norm"]) for e in uninterrupted]
    for name, value in weights(resumed.model).items():
        np.testing.assert_array_equal(value, weights(ours.model)[name], err_msg=name)


def with_dropout(model, p=0.2):
    for half in (model.encoder, model.decoder):
        half.config.hidden_dropout_prob = half.config.attention_probs_dropout_prob = p
    return model


def test_resume_mid_epoch_with_dropout_and_shuffling(saved, tmp_path, monkeypatch):
    """Four shuffled batches an epoch, dropout on: checkpoint-3 is mid-epoch, and resuming
    from it replays the same batches and the same dropout masks."""
    original = mb.EncoderDecoderModel.from_pretrained
    monkeypatch.setattr(mb.EncoderDecoderModel, "from_pretrained", lambda *a, **k: with_dropout(original(*a, **k)))
    overrides = dict(per_device_train_batch_size=4, train_size=16, eval_strategy="no", predict_with_generate=False)
    whole = run(mb, saved, tmp_path / "whole", **overrides)
    resumed = run(mb, saved, tmp_path / "resumed", resume=str(tmp_path / "whole" / "checkpoint-3"), **overrides)
    losses = [(e["step"], e["loss"], e["grad_norm"]) for e in whole.state.log_history if "loss" in e]
    assert [(e["step"], e["loss"], e["grad_norm"]) for e in resumed.state.log_history if "loss" in e] == losses
    assert len({loss for _, loss, _ in losses}) == 6
    for name, value in weights(resumed.model).items():
        np.testing.assert_array_equal(value, weights(whole.model)[name], err_msg=name)


def test_gradient_accumulation_as_transformers(saved, tmp_path):
    # identical examples: however each library splits them into micro-batches, the steps agree
    overrides = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
                     lr_scheduler_type="constant_with_warmup", eval_strategy="no", save_strategy="no",
                     predict_with_generate=False, train_size=1)
    theirs = run(T, saved, tmp_path / "theirs", **overrides)
    ours = run(mb, saved, tmp_path / "ours", **overrides)
    np.testing.assert_allclose(steps(ours, "loss"), steps(theirs, "loss"), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(steps(ours, "grad_norm"), steps(theirs, "grad_norm"), rtol=1e-4)
    assert steps(ours, "learning_rate") == pytest.approx(steps(theirs, "learning_rate"), rel=1e-12)


def test_freezing_matches_transformers(saved, tmp_path):
    overrides = dict(max_steps=3, eval_strategy="no", save_strategy="no", predict_with_generate=False)
    theirs = run(T, saved, tmp_path / "theirs", freeze="encoder.", **overrides)
    ours = run(mb, saved, tmp_path / "ours", freeze="encoder.", **overrides)
    np.testing.assert_allclose(steps(ours, "loss"), steps(theirs, "loss"), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(steps(ours, "grad_norm"), steps(theirs, "grad_norm"), rtol=1e-4)
    before = mb.EncoderDecoderModel.from_pretrained(saved).state_dict()
    after = ours.model.state_dict()
    assert all(np.array_equal(before[n], after[n]) for n in after if n.startswith("encoder."))
    assert not np.array_equal(before["decoder.lm_head.bias"], after["decoder.lm_head.bias"])
    assert ours.model.num_parameters(only_trainable=True) == theirs.model.num_parameters(only_trainable=True)


@pytest.mark.parametrize("kind", ["linear", "constant", "constant_with_warmup", "cosine"])
@pytest.mark.parametrize("warmup_ratio", [0.0, 0.25])
def test_every_lr_scheduler_type_as_transformers(kind, warmup_ratio):
    from minibertgen.trainer.schedules import create_scheduler

    args = mb.Seq2SeqTrainingArguments(lr_scheduler_type=kind, warmup_ratio=warmup_ratio, learning_rate=1e-3)
    ours = create_scheduler(mb.optim.AdamW([mb.training.Parameter("w", np.zeros(2, np.float32))], lr=1e-3), args, 17)
    their_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    theirs = T.get_scheduler(kind, their_optimizer, num_warmup_steps=args.get_warmup_steps(17), num_training_steps=17)
    for _ in range(19):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], rel=1e-12, abs=1e-18)
        ours.step()
        their_optimizer.step()
        theirs.step()
