"""The generation fixtures with a WordPiece tokenizer, for tests of batch jobs (pipeline, CLI, Ray).

The fixtures in tests/fixtures/generation hold weights and configs only; a batch job needs
text in and text out, so each copy here gets a vocab.txt whose tokens are the fixture's
ids in order (ids 0-3: pad, end, start, unknown, as the fixture configs use them) and a
tokenizer_config.json that both minibertgen and transformers read as a BertTokenizer.
"""
import json
import random
import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "generation"
SPECIAL = {"pad_token": "<pad>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
           "mask_token": "<unk>"}


def vocabulary(name) -> list:
    if name == "toy_bert2bert":
        return json.loads((FIXTURES / name / "vocab.json").read_text())
    size = json.loads((FIXTURES / name / "config.json").read_text())["encoder"]["vocab_size"]
    return ["<pad>", "</s>", "<s>", "<unk>"] + [f"w{i}" for i in range(4, size)]


def with_tokenizer(name, directory: Path) -> Path:
    """Copy fixture ``name`` into ``directory`` with a tokenizer; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(FIXTURES / name / file, directory / file)
    (directory / "vocab.txt").write_text("\n".join(vocabulary(name)) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                 "do_lower_case": True, **SPECIAL}))
    return directory


def random_texts(name, count, seed=0, longest=20) -> list:
    """``count`` inputs of 1..``longest`` words from the fixture's vocabulary (words only)."""
    words = vocabulary(name)[4:]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, longest))) for _ in range(count)]
