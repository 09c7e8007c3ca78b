"""Generate over a corpus on a Ray cluster with Ray Data (pip install -e ".[ray]").

    python examples/ray_generate.py --model path/to/bert2bert --input articles.jsonl --output summaries/
    python examples/ray_generate.py --model M --input corpus.parquet --output out/ --address auto --actors 8

Reads JSON lines or Parquet with ray.data (a file or a directory of them, a path every
node can see), runs minibertgen's Text2TextPredictor in a pool of actors (one model per
actor; one GPU each on a GPU cluster), and writes JSON lines (or Parquet, by --output-format)
with the input columns plus `generated_text` and `error` (None, or why a row was skipped).
Rows keep their input order.
"""
import argparse

import ray

from minibertgen.ray_data import generate_dataset


def read(path: str):
    if path.endswith(".parquet"):
        return ray.data.read_parquet(path)
    return ray.data.read_json(path)  # JSON lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (visible to every node) or hub id")
    parser.add_argument("--input", required=True, help=".jsonl / .parquet file or directory")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--output-format", choices=("json", "parquet"), default="json")
    parser.add_argument("--column", default="text", help="the input text column")
    parser.add_argument("--address", default=None, help="ray.init address (default: RAY_ADDRESS or a local cluster)")
    parser.add_argument("--actors", type=int, default=None, help="model replicas (default: one per GPU, else CPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=4)
    args = parser.parse_args(argv)

    if not ray.is_initialized():
        ray.init(address=args.address)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # output rows in input order
    ds = read(args.input)
    out = generate_dataset(ds, args.model, actors=args.actors, batch_size=args.batch_size, column=args.column,
                           max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    if args.output_format == "parquet":
        out.write_parquet(args.output)
    else:
        out.write_json(args.output)  # one JSON object per line, in files under --output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
