"""The Trainer on its own (no torch): arguments refused by name, checkpoints written
atomically and pruned, the best model kept and loaded, early stopping, datasets.Dataset,
the JSON-lines log and the plot."""
import json

import numpy as np
import pytest

from conftest import require_module
from trainer_cases import pairs, tiny_ours, tokenized

import minibertgen as mb
from minibertgen.trainer import checkpoints

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def trainer_for(tmp_path, train=8, callbacks=None, **overrides):
    model, tokenizer = tiny_ours(tmp_path)
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=6, learning_rate=1e-2,
                logging_steps=1, save_steps=2, report_to="none", disable_tqdm=True, plot_curves=False)
    args = mb.Seq2SeqTrainingArguments(**{**args, **overrides})
    return mb.Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized(tokenizer, pairs(train, 0)),
                             eval_dataset=tokenized(tokenizer, pairs(4, 1)), processing_class=tokenizer,
                             data_collator=mb.DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=callbacks)


@pytest.mark.parametrize("name, value", [("deepspeed", "ds.json"), ("fsdp", "full_shard"), ("bf16", True),
                                         ("fp16", True), ("torch_compile", True), ("label_smoothing_factor", 0.1)])
def test_torch_only_arguments_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}: not supported"):
        mb.Seq2SeqTrainingArguments(output_dir="x", **{name: value})


def test_unknown_and_bad_arguments():
    with pytest.raises(TypeError, match="'learning_rte'"):
        mb.Seq2SeqTrainingArguments(output_dir="x", learning_rte=1e-3)
    with pytest.raises(ValueError, match="lr_scheduler_type='polynomial'"):
        mb.Seq2SeqTrainingArguments(lr_scheduler_type="polynomial")
    with pytest.raises(ValueError, match="report_to='wandb'"):
        mb.Seq2SeqTrainingArguments(report_to="wandb")
    with pytest.raises(ValueError, match="per_device_train_batch_size=0"):
        mb.Seq2SeqTrainingArguments(per_device_train_batch_size=0)
    with pytest.raises(ValueError, match="save_steps"):
        mb.Seq2SeqTrainingArguments(load_best_model_at_end=True, eval_strategy="steps", eval_steps=3, save_steps=4)
    args = mb.Seq2SeqTrainingArguments(learning_rate=np.float32(1e-3), report_to="none")
    assert args.output_dir == "trainer_output" and args.seed == 42 and args.lr_scheduler_type == "linear"


def test_a_killed_save_leaves_no_checkpoint_and_the_next_save_cleans_up(tmp_path, monkeypatch):
    trainer = trainer_for(tmp_path, max_steps=2, save_steps=1)
    out = tmp_path / "out"
    calls = {"n": 0}
    real = checkpoints._save_optimizer

    def dies_on_second(optimizer, directory):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while saving")
        real(optimizer, directory)

    monkeypatch.setattr(checkpoints, "_save_optimizer", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-1"]  # no half-written checkpoint-2
    assert checkpoints.check_checkpoint(out / "checkpoint-1")
    # a staging directory left by a process that died is removed by the next save
    (out / ".checkpoint-9.999999999.0123456789abcdef0123456789abcdef.tmp").mkdir()
    monkeypatch.setattr(checkpoints, "_save_optimizer", real)
    trainer_for(tmp_path, max_steps=2, save_steps=1).train()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-1", "checkpoint-2"]


def test_save_total_limit_keeps_the_best_and_loads_it_at_the_end(tmp_path):
    trainer = trainer_for(tmp_path, max_steps=6, save_steps=2, eval_strategy="steps", eval_steps=2,
                          save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                          learning_rate=0.3)  # so high that the loss goes up again: the best is not the last
    trainer.train()
    losses = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    best = min(losses, key=losses.get)
    kept = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-"))
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best}")
    assert f"checkpoint-{best}" in kept and "checkpoint-6" in kept and len(kept) <= 2
    saved = mb.EncoderDecoderModel.from_pretrained(tmp_path / "out" / f"checkpoint-{best}").state_dict()
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)


def test_early_stopping(tmp_path):
    trainer = trainer_for(tmp_path, max_steps=30, save_steps=1, eval_strategy="steps", eval_steps=1,
                          load_best_model_at_end=True, learning_rate=0.5, save_total_limit=2,
                          callbacks=[mb.EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert trainer.state.global_step < 30
    assert min(evals[-2:]) >= min(evals[:-2])  # stopped after two evaluations without a new best
    with pytest.raises(ValueError, match="early_stopping_patience=0"):
        mb.EarlyStoppingCallback(early_stopping_patience=0)


def test_datasets_dataset_gives_the_same_run_as_a_list(tmp_path):
    datasets = require_module("datasets")  # the reference extra installs it; a skip fails CI
    plain = trainer_for(tmp_path / "a", max_steps=3, save_strategy="no")
    plain.train()
    model, tokenizer = tiny_ours(tmp_path)
    source = datasets.Dataset.from_dict({"source": [s for s, _ in pairs(8, 0)], "target": [t for _, t in pairs(8, 0)]})
    mapped = source.map(lambda b: tokenizer(b["source"], text_target=b["target"]), batched=True)
    assert set(mapped.column_names) >= {"source", "input_ids", "labels"}  # the text columns are dropped by the Trainer
    args = mb.Seq2SeqTrainingArguments(output_dir=str(tmp_path / "b"), per_device_train_batch_size=4, max_steps=3,
                                       learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
                                       plot_curves=False)
    trainer = mb.Seq2SeqTrainer(model=model, args=args, train_dataset=mapped, processing_class=tokenizer,
                                data_collator=mb.DataCollatorForSeq2Seq(tokenizer, model=model))
    trainer.train()
    assert [e.get("loss") for e in trainer.state.log_history] == [e.get("loss") for e in plain.state.log_history]


def test_json_lines_log_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    trainer = trainer_for(tmp_path, max_steps=3, save_strategy="no", eval_strategy="steps", eval_steps=3,
                          plot_curves=True)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in lines if "loss" in e] == [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert any("eval_loss" in e for e in lines)
    assert (tmp_path / "out" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_text_target_gives_labels(tmp_path):
    _, tokenizer = tiny_ours(tmp_path)
    encoded = tokenizer("copy cat dog", text_target="cat dog")
    assert encoded["labels"] == tokenizer("cat dog")["input_ids"]
    assert encoded["input_ids"] == tokenizer("copy cat dog")["input_ids"]


def test_collator_pads_labels_with_ignore_index_and_builds_decoder_inputs(tmp_path):
    model, tokenizer = tiny_ours(tmp_path)
    collator = mb.DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=4)
    batch = collator(tokenized(tokenizer, [("copy cat", "cat"), ("reverse cat dog hat", "hat dog cat")]))
    assert batch["labels"].shape == (2, 8) and batch["input_ids"].shape == (2, 8)
    assert (batch["labels"][0, 3:] == -100).all()
    np.testing.assert_array_equal(batch["decoder_input_ids"][:, 0], [2, 2])
    np.testing.assert_array_equal(batch["decoder_input_ids"][1, 1:6], batch["labels"][1, :5])


def test_bad_datasets_named(tmp_path):
    model, tokenizer = tiny_ours(tmp_path)
    args = mb.Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none")
    with pytest.raises(TypeError, match="train_dataset"):
        mb.Seq2SeqTrainer(model=model, args=args, train_dataset={"input_ids": [[1, 2]]})
    with pytest.raises(ValueError, match="train_dataset: the dataset is empty"):
        mb.Seq2SeqTrainer(model=model, args=args, train_dataset=[])
    with pytest.raises(ValueError, match="no checkpoint-N"):
        mb.Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized(tokenizer, pairs(2, 0)),
                          processing_class=tokenizer).train(resume_from_checkpoint=True)


def test_progress_bar_shows_loss_and_lr_and_obeys_the_switches(tmp_path, monkeypatch):
    import tqdm.auto

    from minibertgen import progress

    bars = []

    class Recorder:
        def __init__(self, total, initial, desc, unit):
            self.n, self.total, self.postfix, self.closed = initial, total, {}, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def set_postfix(self, **values):
            self.postfix = values

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    monkeypatch.setattr(progress, "progress_bars_enabled", lambda: True)
    trainer_for(tmp_path / "a", max_steps=3, save_strategy="no", disable_tqdm=None).train()
    assert len(bars) == 1 and bars[0].n == 3 and bars[0].closed
    assert set(bars[0].postfix) == {"loss", "lr"}
    trainer_for(tmp_path / "b", max_steps=1, save_strategy="no", disable_tqdm=True).train()
    monkeypatch.setattr(progress, "progress_bars_enabled", lambda: False)  # set_progress_bars(False), MINIBERTGEN_QUIET
    trainer_for(tmp_path / "c", max_steps=1, save_strategy="no", disable_tqdm=None).train()
    assert len(bars) == 1


def test_optimizer_load_state_dict_names_what_it_got():
    model, _ = tiny_ours_for_errors()
    optimizer = mb.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=r"state_dict: got \['x'\], expected a dict with 'state' and 'param_groups'"):
        optimizer.load_state_dict({"x": 1})
    with pytest.raises(ValueError, match="state_dict: got 'int'"):
        optimizer.load_state_dict(3)


def tiny_ours_for_errors():
    config = mb.BertGenerationConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, is_decoder=True)
    return mb.BertGenerationDecoder(config, seed=0), config
