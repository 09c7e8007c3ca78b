"""Mutation evidence (issue 36): deliberate faults in the reference and backward modules,
each of which the test suite must catch.

    python benchmarks/mutations.py              # every mutation, table to benchmarks/results/mutations.txt
    python benchmarks/mutations.py --only 3 17  # some of them
    python benchmarks/mutations.py --list       # what they are
    python benchmarks/mutations.py --only 39 --tests tests/training/test_loud_gradients_live.py

For each mutation: copy the package (minibertgen/) into a temporary folder, replace one
small code snippet by its faulty version there (never in the working tree), and run a
fast part of the suite aimed at the mutated module (TARGETED below, stopping at the first
failure) with that copy first on the import path.  A mutation is *caught* when a test fails (or errors), *SURVIVED*
when the suite passes.  Snippets are found by their text, wherever they sit in the
package's top-level modules (code moves between modules; the snippet does not), and must
occur exactly once: a snippet found nowhere, or in several places, is reported as
"not applied", never as caught.  The unmutated copy runs first and must pass.

Run on demand, not in CI (about 20-90 s a mutation on two shared cores; the baseline 1-3 min).
Exit status: 0 when every applied mutation was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minibertgen"
OUT = ROOT / "benchmarks" / "results" / "mutations.txt"

# The part of the suite a mutation runs (-x stops at the first failure): chosen by the module the
# snippet was found in, the tests aimed at that module first; a module not listed runs SUITE.
SUITE = [
    "tests/test_reference_ops.py",
    "tests/training/test_ops_backward.py",
    "tests/training/test_attention_backward.py",
    "tests/generation/test_cache_steps.py",
    "tests/training/test_loud_gradients_live.py",
    "tests/test_reference_fixtures.py",
    "tests/generation/test_reference_recorded.py",
]
LOUD, CACHE = "tests/training/test_loud_gradients_live.py", "tests/generation/test_cache_steps.py"
TARGETED = {
    "ops.py": ["tests/test_reference_ops.py", "tests/training/test_ops_backward.py", LOUD],
    "attention.py": ["tests/test_reference_ops.py", CACHE, LOUD, "tests/training/test_relative_distances_live.py"],
    "model.py": [LOUD, CACHE, "tests/test_reference_fixtures.py", "tests/generation/test_reference_recorded.py"],
    "cache.py": [CACHE, "tests/test_reference_ops.py", "tests/generation/test_reference_recorded.py"],
    "ops_backward.py": ["tests/training/test_ops_backward.py", LOUD],
    "attention_backward.py": ["tests/training/test_attention_backward.py", LOUD],
    "model_backward.py": [LOUD],
}


@dataclass
class Mutation:
    what: str
    snippet: str
    fault: str


MUTATIONS = [
    # -- ops.py: the forward ops
    Mutation("linear forgets its bias", "        y = y + bias\n", "        y = y\n"),
    Mutation("LayerNorm drops its shift", "return (normalised * weight + bias)", "return (normalised * weight)"),
    Mutation("LayerNorm variance over the wrong axis", "variance = ((work - mean) ** 2).mean(axis=-1,",
             "variance = ((work - mean) ** 2).mean(axis=0,"),
    Mutation("GELU's erf argument divided by 2, not sqrt 2", "0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))",
             "0.5 * x * (1.0 + erf(x / 2.0))"),
    Mutation("attention softmax over the query axis", "probs = softmax(work, axis=-1)", "probs = softmax(work, axis=-2)"),
    Mutation("attention mask ignored", "work = xp.where(mask == lowest, lowest, work + mask)", "work = work"),
    Mutation("loss averaged over ignored labels too", "return (total / keep.sum())", "return (total / keep.size)"),
    # -- attention.py
    Mutation("relative positions reversed (forward)", "distance = query_positions[:, None] - key_positions[None, :]  #",
             "distance = key_positions[None, :] - query_positions[:, None]  #"),
    Mutation("relative_key_query loses its key term",
             'scores = scores + xp.einsum("bhkd,qkd->bhqk", key, table)', "scores = scores"),
    Mutation("transposed head split", "x.reshape(batch, seq, heads, hidden // heads).transpose(0, 2, 1, 3)",
             "x.reshape(batch, seq, hidden // heads, heads).transpose(0, 3, 1, 2)"),
    Mutation("scores scaled by d, not sqrt(d)", "masked_softmax(scores, mask, math.sqrt(query.shape[-1])",
             "masked_softmax(scores, mask, query.shape[-1]"),
    Mutation("head mask ignored (forward)", "probs = probs * head_mask", "probs = probs"),
    Mutation("causal mask lets a query see the next token", "allowed = (key_pos <= query_pos)",
             "allowed = (key_pos <= query_pos + 1)"),
    Mutation("relative query positions forget the cache offset",
             "return xp.arange(past_length, past_length + seq)  # [seq]",
             "return xp.arange(seq)  # [seq]"),
    Mutation("cross-attention values from the key projection",
             'linear(encoder_states, p["value"]["weight"], p["value"]["bias"])',
             'linear(encoder_states, p["key"]["weight"], p["key"]["bias"])'),
    # -- model.py
    Mutation("missing residual in add & norm", 'p["LayerNorm"]["bias"], eps, residual=residual)',
             'p["LayerNorm"]["bias"], eps, residual=None)'),
    Mutation("feed-forward without its activation", "    inner = activation(config.hidden_act)(inner)\n", "\n"),
    Mutation("absolute positions forget the cache offset", "return xp.arange(past_length, past_length + seq)[None, :]",
             "return xp.arange(seq)[None, :]"),
    # (not "+ 1" for "+ pad": every RoBERTa model here has pad_token_id 1, where that is no fault)
    Mutation("RoBERTa padding tokens get a counted position", "return (xp.cumsum(real, axis=1) + past_length) * real + pad",
             "return (xp.cumsum(real, axis=1) + past_length) + pad"),
    Mutation("token types ignored", 'hidden = hidden + embedding(p["token_type_embeddings"]["weight"], token_type_ids)',
             "hidden = hidden"),
    Mutation("LM head transform without its activation", "activated = activation(act)(inner)", "activated = inner"),
    Mutation("LM head bias dropped", 'linear(hidden, p["decoder"]["weight"], p["bias"])',
             'linear(hidden, p["decoder"]["weight"], None)'),
    Mutation("causal-LM loss not shifted", "shifted_labels = labels[:, 1:]", "shifted_labels = labels[:, :-1]"),
    Mutation("decoder starts from the pad id", "shifted[:, 0] = decoder_start_token_id", "shifted[:, 0] = pad_token_id"),
    Mutation("cross-attention ignores the encoder's padding",
             "encoder_mask = padding_mask(encoder_attention_mask, dtype)", "encoder_mask = None"),
    # -- cache.py
    Mutation("beam reorder forgets the values",
             "self.values[layer][:, :, :n] = self.values[layer][beam_idx, :, :n]", "pass"),
    Mutation("beam reorder off by one (last position kept)", "        n = self.length\n", "        n = self.length - 1\n"),
    Mutation("cache keeps the previous step's keys at the new slot (off by one)",
             "self.keys[layer][:, :, start:end] = key",
             "self.keys[layer][:, :, start:end] = self.keys[layer][:, :, max(start - 1, 0):max(start - 1, 0) + n] "
             "if start else key"),
    # -- ops_backward.py
    Mutation("linear backward drops the bias gradient", "dbias = rows_out.sum(axis=0) if has_bias else None",
             "dbias = 0 * rows_out.sum(axis=0) if has_bias else None"),
    Mutation("linear backward: weight gradient transposed wrong way", "dweight = rows_out.T @ rows_in",
             "dweight = (rows_out.T @ rows_in)[::-1]"),
    Mutation("LayerNorm backward drops the xhat term",
             " - xhat * (g * xhat).mean(axis=-1, keepdims=True))", ")"),
    Mutation("LayerNorm backward: gain gradient from the un-normalised input",
             "dweight = (g_out * xhat).reshape(-1, hidden).sum(axis=0)",
             "dweight = (g_out * s).reshape(-1, hidden).sum(axis=0)"),
    Mutation("GELU derivative without x * pdf", "    return cdf + x * pdf\n", "    return cdf\n"),
    Mutation("softmax backward sums over the wrong axis", "weighted = (dprobs * probs).sum(axis=-1, keepdims=True)",
             "weighted = (dprobs * probs).sum(axis=-2, keepdims=True)"),
    Mutation("loss backward divides by every row, ignored ones too", "(dloss / count)", "(dloss / labels.shape[0])"),
    Mutation("embedding backward feeds the padding row",
             "rows = rows * (flat_ids != padding_idx)[:, None].astype(rows.dtype)", "rows = rows"),
    Mutation("wrong dropout scale (x (1 - p) instead of / (1 - p))", "keep.astype(dtype) * (1.0 / (1.0 - p))",
             "keep.astype(dtype) * (1.0 - p)"),
    Mutation("dropout backward ignores the mask", "return dout if mask is None else dout * mask", "return dout"),
    # -- attention_backward.py
    Mutation("relative backward reads the query positions reversed",
             "distance = query_positions[:, None] - key_positions[None, :] + max_positions - 1",
             "distance = query_positions[::-1][:, None] - key_positions[None, :] + max_positions - 1"),
    Mutation("relative_key_query backward drops the key's share", "dkey = dkey + dk_rel", "dkey = dkey"),
    Mutation("head mask ignored (backward)", "dused = dused * head_mask", "dused = dused"),
    Mutation("attention backward without the 1/sqrt(d) scale",
             "masked_softmax_backward(dprobs, probs, math.sqrt(query.shape[-1]))",
             "masked_softmax_backward(dprobs, probs, 1.0)"),
    Mutation("self-attention backward drops the keys' share of dhidden", "return dhidden_q + dhidden_k + dhidden_v, grads",
             "return dhidden_q + dhidden_v, grads"),
    Mutation("cross-attention backward drops the keys' share of the encoder gradient",
             "return dhidden, dencoder_k + dencoder_v,", "return dhidden, dencoder_v,"),
    # -- model_backward.py
    Mutation("add & norm backward drops the residual gradient", "    return dx, dsum, grads\n",
             "    return dx, 0 * dsum, grads\n"),
    Mutation("feed-forward backward drops the residual", "    return dh + dresidual, grads\n", "    return dh, grads\n"),
    Mutation("position embedding gradient to reversed positions",
             'grads["position_embeddings"] = _lookup_backward(dsum, record["position_ids"],',
             'grads["position_embeddings"] = _lookup_backward(dsum, record["position_ids"][..., ::-1],'),
    Mutation("LM head transform backward skips the activation derivative",
             'dinner = activation_backward(act, dactivated, rec["inner"])', "dinner = dactivated"),
    Mutation("causal-LM loss backward shifted the wrong way", "dlogits[:, :-1] = shifted.reshape",
             "dlogits[:, 1:] = shifted.reshape"),
    Mutation("encoder gradient from the first decoder layer only",
             "dencoder = dencoder_i if dencoder is None else dencoder + dencoder_i", "dencoder = dencoder_i"),
    Mutation("projection backward drops its bias gradient", "    return dx, _linear_grads(dweight, dbias)\n",
             "    return dx, _linear_grads(dweight, 0 * dbias)\n"),
]


def locate(package, snippet):
    """[(path, count)] of the package's top-level modules that hold ``snippet``."""
    found = []
    for path in sorted(package.glob("*.py")):
        count = path.read_text().count(snippet)
        if count:
            found.append((path, count))
    return found


def run_suite(copy_root, suite, timeout):
    """Run ``suite`` with the package copy under ``copy_root`` first on the path.
    -> (passed: bool, first failing test or error line, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(copy_root), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
               "-c", str(ROOT / "pyproject.toml"), *[str(ROOT / t) for t in suite]]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy_root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return True, "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
    if failed:
        return False, re.sub(r"^.*?(?=tests/)", "", failed[0]), seconds  # the node id from tests/ on
    tail = (done.stdout + done.stderr).strip().splitlines()
    return False, f"exit {done.returncode}: {tail[-1] if tail else ''}", seconds


def fresh_copy(workdir):
    target = Path(workdir) / "minibertgen"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def check_import_path(workdir):
    """The copy, not the working tree (nor an editable install), is what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    where = subprocess.run([sys.executable, "-c", "import minibertgen; print(minibertgen.__file__)"], cwd=workdir,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(str(workdir)):
        raise SystemExit(f"the tests would import {where}, not the copy under {workdir}")


def mutate(copy, mutation):
    """Apply ``mutation`` to the copy.  -> (module name, None) or (None, why not applied)."""
    found = locate(copy, mutation.snippet)
    total = sum(count for _, count in found)
    if total == 0:
        return None, "not applied: snippet not found"
    if total > 1:
        places = ", ".join(f"{p.name} x{c}" for p, c in found)
        return None, f"not applied: snippet ambiguous ({places})"
    path = found[0][0]
    path.write_text(path.read_text().replace(mutation.snippet, mutation.fault))
    return path.name, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="mutation numbers to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument("--tests", nargs="+", help="test files to run for every mutation (default: TARGETED)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per suite run")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the table")
    args = parser.parse_args(argv)
    chosen = [(i, m) for i, m in enumerate(MUTATIONS, 1) if not args.only or i in args.only]
    if args.list:
        for i, m in chosen:
            print(f"{i:3d}  {m.what}")
        return 0
    lines = [f"baseline suite: {' '.join(SUITE)} (-x); each mutation runs the files TARGETED names for its module",
             f"{'#':>3}  {'module':<22} {'result':<90} {'s':>5}  mutation"]
    with tempfile.TemporaryDirectory(prefix="mutations-") as workdir:
        fresh_copy(workdir)
        check_import_path(workdir)
        passed, failure, seconds = run_suite(workdir, SUITE, args.timeout)
        print(f"baseline (no mutation): {'passes' if passed else 'FAILS: ' + failure} in {seconds:.0f} s", flush=True)
        if not passed:
            return 2
        lines.insert(1, f"baseline (no mutation): passes in {seconds:.0f} s")
        caught = survived = skipped = 0
        for i, mutation in chosen:
            module, why = mutate(fresh_copy(workdir), mutation)
            if module is None:
                result, seconds, module = why, 0.0, "-"
                skipped += 1
            else:
                passed, failure, seconds = run_suite(workdir, args.tests or TARGETED.get(module, SUITE), args.timeout)
                result = "SURVIVED (the suite passed)" if passed else f"caught: {failure}"
                survived += passed
                caught += not passed
            line = f"{i:3d}  {module:<22} {result[:90]:<90} {seconds:5.0f}  {mutation.what}"
            lines.append(line)
            print(line, flush=True)
    lines.append(f"{caught} caught, {survived} survived, {skipped} not applied, of {len(chosen)} mutations")
    print(lines[-1])
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0 if survived == 0 and skipped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
