"""The `minibertgen` command line (also `python -m minibertgen`).

    echo "Plants create energy through " | minibertgen run --task text2text-generation --model M

`run` reads inputs (stdin lines by default, or --input FILE as lines, CSV, JSON or JSON
lines), runs the text2text-generation pipeline on them and writes one generated text per
line (or CSV / JSON / JSON lines with --format).  As with `transformers run`, a stdin
line is passed on as read, newline included.  Errors end with a one-line message and a
non-zero exit status; --debug shows the traceback.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

FORMATS = ("infer", "pipe", "csv", "json", "jsonl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibertgen", description="minibertgen: BertGeneration on NumPy/CuPy")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the text2text-generation pipeline over inputs",
                              description=__doc__.split("\n\n")[1])
    run.add_argument("--task", default="text2text-generation",
                     help="text2text-generation (default), summarization or translation")
    run.add_argument("--model", required=True, help="a checkpoint directory or a hub id in the local HF cache")
    run.add_argument("--tokenizer", help="tokenizer directory or hub id (default: the model's)")
    run.add_argument("--device", default=None,
                     help="cpu (default), -1 (cpu), N or cuda:N for GPU N (needs CuPy)")
    run.add_argument("--dtype", default=None, help="float32 (default), float16, bfloat16 or auto (as stored)")
    run.add_argument("--input", help="read inputs from this file (default: stdin)")
    run.add_argument("--output", help="write results to this file (default: stdout)")
    run.add_argument("--overwrite", action="store_true", help="allow --output to replace an existing file")
    run.add_argument("--format", default="infer", choices=FORMATS,
                     help="input and output format: pipe (lines), csv, json, jsonl; infer (default) "
                          "picks it from --input's extension, else pipe")
    run.add_argument("--column", help="input column (csv/json/jsonl); default 'text' or the only column")
    run.add_argument("--batch-size", type=int, default=1, help="inputs generated together (padded)")
    gen = run.add_argument_group("generation (defaults: the model's generation config, then the pipeline's)")
    gen.add_argument("--num-beams", type=int, help="beam search width (1 = greedy)")
    gen.add_argument("--max-new-tokens", type=int, help="most tokens to generate")
    gen.add_argument("--min-new-tokens", type=int, help="fewest tokens to generate")
    gen.add_argument("--max-length", type=int, help="longest output, start token included")
    gen.add_argument("--num-return-sequences", type=int, help="outputs per input (beam search or sampling)")
    gen.add_argument("--do-sample", action="store_true", default=None, help="sample instead of searching")
    gen.add_argument("--temperature", type=float, help="sampling temperature")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    gen.add_argument("--top-p", type=float, help="sample within the top-p probability mass")
    gen.add_argument("--seed", type=int, help="random seed for sampling")
    gen.add_argument("--repetition-penalty", type=float, help="penalty > 1 discourages repeated tokens")
    gen.add_argument("--no-repeat-ngram-size", type=int, help="forbid repeating n-grams of this size")
    gen.add_argument("--length-penalty", type=float, help="beam search: exponent on length in the score")
    quant = run.add_argument_group("quantization")
    quant.add_argument("--load-in-4bit", action="store_true", help="4-bit NF4 weights for the linear layers")
    quant.add_argument("--load-in-8bit", action="store_true", help="8-bit (LLM.int8) weights for the linear layers")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


_GENERATION_FLAGS = ("num_beams", "max_new_tokens", "min_new_tokens", "max_length", "num_return_sequences",
                     "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size",
                     "length_penalty")


def _device(text):
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _format(args) -> str:
    if args.format != "infer":
        return args.format
    if args.input:
        suffix = Path(args.input).suffix.lower().lstrip(".")
        if suffix in ("csv", "json", "jsonl"):
            return suffix
    return "pipe"


def read_inputs(args, fmt: str, stdin) -> list[str]:
    """The texts to generate from, in order."""
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            raise FileNotFoundError(f"--input {args.input}: no such file")
        text = path.read_text(encoding="utf-8")
    else:
        text = stdin.read()
    if fmt == "pipe":
        return io.StringIO(text).readlines()  # newline kept, as transformers run passes it on
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [_column(row, args.column, i) for i, row in enumerate(rows)]
    if fmt == "json":
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("--format json: expected a JSON list of objects or strings")
    else:  # jsonl
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [item if isinstance(item, str) else _column(item, args.column, i) for i, item in enumerate(items)]


def _column(row: dict, column: str | None, index: int) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"input item {index}: expected an object or a string, got {type(row).__name__}")
    if column is None:
        if "text" in row:
            column = "text"
        elif len(row) == 1:
            column = next(iter(row))
        else:
            raise ValueError(f"input has columns {sorted(row)}: choose one with --column")
    if column not in row:
        raise ValueError(f"--column {column}: not in input item {index} (columns: {sorted(row)})")
    return str(row[column])


def write_outputs(texts, results, fmt: str, out) -> None:
    """results: per input, a list of records {"generated_text": ...}."""
    if fmt == "pipe":
        for records in results:
            for record in records:
                out.write(_single_line(next(iter(record.values()))) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        key = next(iter(results[0][0])) if results and results[0] else "generated_text"
        writer.writerow(["input", key])
        for text, records in zip(texts, results):
            for record in records:
                writer.writerow([text.rstrip("\n"), record[key]])
    elif fmt == "json":
        json.dump([record for records in results for record in records], out, ensure_ascii=False)
        out.write("\n")
    else:
        for text, records in zip(texts, results):
            for record in records:
                out.write(json.dumps({"input": text.rstrip("\n"), **record}, ensure_ascii=False) + "\n")


def _single_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def run_command(args, stdin, stdout) -> int:
    from .pipeline import pipeline
    from .progress import set_progress_bars

    if args.quiet:
        set_progress_bars(False)
    if args.load_in_4bit and args.load_in_8bit:
        raise ValueError("--load-in-4bit and --load-in-8bit: choose one")
    quantization_config = None
    if args.load_in_4bit or args.load_in_8bit:
        from .quantization import BitsAndBytesConfig

        quantization_config = BitsAndBytesConfig(load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
                                                 **({"bnb_4bit_quant_type": "nf4"} if args.load_in_4bit else {}))
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} exists: pass --overwrite to replace it")
    fmt = _format(args)
    generate_kwargs = {k: getattr(args, k) for k in _GENERATION_FLAGS if getattr(args, k) is not None}
    generator = pipeline(args.task, model=args.model, tokenizer=args.tokenizer, dtype=args.dtype,
                         device=_device(args.device), quantization_config=quantization_config, **generate_kwargs)
    texts = read_inputs(args, fmt, stdin)
    seed_kwargs = {"seed": args.seed} if args.seed is not None else {}
    results = []
    if texts:
        outputs = generator(texts, batch_size=args.batch_size, **seed_kwargs)
        results = [item if isinstance(item, list) else [item] for item in outputs]
    if args.output:
        buffer = io.StringIO()
        write_outputs(texts, results, fmt, buffer)
        tmp = Path(args.output + ".tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        tmp.replace(args.output)  # nothing half-written if generation fails midway
    else:
        write_outputs(texts, results, fmt, stdout)
    return 0


def main(argv=None, stdin=None, stdout=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run_command(args, stdin or sys.stdin, stdout or sys.stdout)
    except KeyboardInterrupt:
        print("minibertgen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's contract: one line, no traceback (unless --debug)
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"minibertgen: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
