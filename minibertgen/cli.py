"""The `minibertgen` command line (also `python -m minibertgen`).

    echo "Plants create energy through " | minibertgen run --task text2text-generation --model M
    echo "5 de marzo de 2021" | minibertgen run --model bert2bert-dates     # 2021-03-05, shipped

`run` streams inputs (stdin lines by default, or --input FILE as lines, CSV, JSON or JSON
lines), runs the text2text-generation pipeline on them in length-sorted batches and writes
one record per input row as soon as its batch is done, each naming its row (row<TAB>text
lines, or CSV / JSON / JSON lines: the format --output's extension names, else the
input's). As with `transformers run`, a stdin line is passed on as read, newline included.
A bad row (no text, null, empty, not UTF-8, too long) gets an error record and a line on
stderr with its row number (exit status 3 at the end), or ends the job with --fail-fast.
Mistakes of the whole job (a --column that is not there, generation settings the model
cannot use) are found before any output exists. Other errors end with a one-line message
and exit status 1; --debug shows the traceback.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from .batch import RowFailed
from .batch_io import open_input, read_rows
from .batch_job import check_output, input_fingerprint, open_job_output
from .batch_output import Layout, StreamOutput, format_of_name, result_field

__all__ = ["main", "build_parser"]

FORMATS = ("infer", "pipe", "csv", "json", "jsonl")  # infer: from the --input / --output names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibertgen", description="minibertgen: BertGeneration on NumPy/CuPy")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the text2text-generation pipeline over inputs",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # the examples, line by line
    run.add_argument("--task", default="text2text-generation",
                     help="text2text-generation (default), summarization or translation")
    run.add_argument("--model", required=True,
                     help="a checkpoint directory, a shipped model (bert2bert-dates: dates -> ISO dates) or a hub "
                          "id: from the local HF cache, else downloaded when huggingface_hub is installed")
    run.add_argument("--tokenizer", help="tokenizer directory or hub id (default: the model's)")
    run.add_argument("--device", default=None,
                     help="cpu (default), -1 (cpu), N or cuda:N for GPU N (needs CuPy)")
    run.add_argument("--dtype", default=None, help="float32 (default), float16, bfloat16 or auto (as stored)")
    run.add_argument("--input", help="read inputs from this file (default: stdin)")
    run.add_argument("--output", help="write results to this file (default: stdout)")
    run.add_argument("--overwrite", action="store_true", help="allow --output to replace an existing file")
    run.add_argument("--format", default="infer", choices=FORMATS,
                     help="input and output format: pipe (lines), csv, json, jsonl; infer (default) "
                          "reads the input as its extension says (else lines) and writes what --output's "
                          "extension says (else the input's format)")
    run.add_argument("--column", help="input column (csv/json/jsonl); default 'text' or the only column")
    run.add_argument("--batch-size", type=int, default=1,
                     help="inputs generated together (sorted by length, padded, written back in input order)")
    run.add_argument("--resume", action="store_true",
                     help="--input FILE --output FILE: check that this job wrote --output, keep its rows and "
                          "generate the rest")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first bad row (default: skip it)")
    run.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run on a Ray cluster through Ray Data (needs the ray extra); ADDRESS as ray.init takes "
                          "it, default: RAY_ADDRESS or a new local cluster")
    run.add_argument("--actors", type=int, help="--ray: model replicas (default: one per GPU, else per CPU)")
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


def _formats(args) -> tuple[str, str]:
    """(input format, output format): --format for both, else the files' extensions."""
    named = format_of_name(args.output) if args.output else None
    if args.format != "infer":
        if named not in (None, args.format):
            raise ValueError(f"--format {args.format} but --output {args.output} names a {named} file: the "
                             f"output is written in the format its name says; rename it or pass --format {named}")
        return args.format, args.format
    source = "pipe"
    if args.input:
        suffix = Path(args.input).suffix.lower().lstrip(".")
        source = suffix if suffix in ("csv", "json", "jsonl") else "pipe"
    return source, named or source


def _quantization_config(args):
    if args.load_in_4bit and args.load_in_8bit:
        raise ValueError("--load-in-4bit and --load-in-8bit: choose one")
    if not (args.load_in_4bit or args.load_in_8bit):
        return None
    from .quantization import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
                              **({"bnb_4bit_quant_type": "nf4"} if args.load_in_4bit else {}))


def _check_arguments(args) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected a positive integer")
    if args.actors is not None and args.ray is None:
        raise ValueError("--actors is for --ray jobs")
    if args.actors is not None and args.actors < 1:
        raise ValueError(f"--actors {args.actors}: expected a positive integer")


def run_command(args, stdin, stdout, stderr) -> int:
    from .batch import Summary
    from .progress import set_progress_bars

    if args.quiet:
        set_progress_bars(False)
    _check_arguments(args)
    source_format, output_format = _formats(args)
    check_output(args.output, args.overwrite, args.resume, args.input)  # before anything is loaded
    quantization_config = _quantization_config(args)
    source = open_input(args.input, stdin, source_format)
    try:
        columns, done, summary = [], set(), Summary()
        rows = _first_row_read(read_rows(source, source_format, args.column, columns))  # header, --column
        layout = Layout(output_format, result_field(args.task), columns if source_format == "csv" else None)
        results, per_row = _start_job(args, _skip_done(rows, done, summary), quantization_config)
        if args.output is None:
            return _write_all(results, StreamOutput(stdout, layout), summary, args, stderr)
        identity = _identity(args, source_format, output_format, per_row)
        with open_job_output(args.output, layout, identity, args.resume, args.overwrite) as output:
            done.update(output.done)  # rows are read only from here on
            return _write_all(results, output, summary, args, stderr)
    finally:
        if args.input:
            source.close()


def _first_row_read(rows):
    """``rows`` with its first row read now: a CSV header or a --column that is wrong ends the job
    here, before any output exists."""
    first = next(rows, None)
    return rows if first is None else itertools.chain([first], rows)


def _start_job(args, rows, quantization_config):
    """(results, records per row): the model loaded and the settings checked once."""
    generate_kwargs = {k: getattr(args, k) for k in _GENERATION_FLAGS if getattr(args, k) is not None}
    load = dict(model=args.model, tokenizer=args.tokenizer, dtype=args.dtype, device=_device(args.device),
                quantization_config=quantization_config, **generate_kwargs)
    if args.ray is not None:
        from .ray_data import ray_results

        results, _ = ray_results(rows, args.task, load, address=args.ray or None, actors=args.actors,
                                 batch_size=args.batch_size, seed=args.seed, quiet=args.quiet)
        return results, args.num_return_sequences or 1
    from .batch import generate_rows
    from .pipeline import pipeline

    generator = pipeline(args.task, **load)
    seed_kwargs = {"seed": args.seed} if args.seed is not None else {}
    try:  # once, from a one-token input: settings no row can use stop the job here, not at every row
        per_row = len(generator.generate_batch([generator.encode("a")], generate_kwargs=seed_kwargs)[0])
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"the generation settings cannot be used with this model (checked before any "
                        f"output was written): {exc}") from None
    results = generate_rows(generator, rows, batch_size=args.batch_size, ordered=False, generate_kwargs=seed_kwargs)
    return results, per_row


def _identity(args, source_format, output_format, per_row) -> dict:
    """What the job file records: the input's fingerprint and every setting that shapes results
    (the batch size too: it decides which rows a seeded sampling run draws together)."""
    settings = {name: getattr(args, name) for name in ("task", "tokenizer", "dtype", "column", "seed", "batch_size",
                                                      "load_in_4bit", "load_in_8bit", *_GENERATION_FLAGS)}
    model = Path(args.model)
    settings.update(model=str(model.resolve()) if model.is_dir() else args.model, input_format=source_format)
    return {"input": input_fingerprint(args.input) if args.input else None, "format": output_format,
            "records_per_row": per_row, "settings": settings}


def _skip_done(rows, done: set, summary):
    for row in rows:
        if row.number in done:
            summary.skipped += 1
        else:
            yield row


def _write_all(results, output, summary, args, stderr) -> int:
    """Each result written as it comes, one record (or num_return_sequences) per row."""
    complete = False
    try:
        for result in results:
            if result.error is not None:
                if args.fail_fast:
                    raise RowFailed(result)
                summary.failed += 1
                print(f"minibertgen: {result.row.where()}: {result.error}", file=stderr)
            else:
                summary.written += 1
            output.write(result)
        complete = True
    finally:
        output.close(complete)
    if not args.quiet or summary.failed:
        print(f"minibertgen: {summary.line()}", file=stderr)
    return 3 if summary.failed else 0


def main(argv=None, stdin=None, stdout=None, stderr=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run_command(args, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    except KeyboardInterrupt:
        print("minibertgen: interrupted", file=stderr or sys.stderr)
        return 130
    except Exception as exc:  # the CLI's contract: one line, no traceback (unless --debug)
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"minibertgen: error: {type(exc).__name__}: {message}", file=stderr or sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
