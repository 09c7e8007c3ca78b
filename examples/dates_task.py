"""The task of the shipped model bert2bert-dates: a date written by people -> its ISO form.

    "Freitag, 5. März 2021"   -> "2021-03-05"
    "5 de marzo de 2021"      -> "2021-03-05"
    "Mar 5, 2021"             -> "2021-03-05"

Babel (the CLDR's date formats, kept by the Pallets project) is the oracle: every source is
``babel.dates.format_date(day, style, locale)`` for one of 8 locales x 3 styles (medium, long,
full; the short styles are left out because "3/5/21" means different days in different
locales, and a two-digit year hides the century), and every target is ``day.isoformat()``.
Days run from 1900-01-01 to 2099-12-31. The split is by *day*: a seeded draw puts 1 day in
20 into the held-out set, so no held-out date is seen in training in any language or style.

Used by examples/train_shipped_model.py; needs ``pip install babel``.
"""
from __future__ import annotations

import datetime
import json
import random

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_PT")
STYLES = ("medium", "long", "full")
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
HELDOUT_EVERY = 20  # about 1 day in 20 is held out


def all_days() -> list:
    count = (LAST_DAY - FIRST_DAY).days + 1
    return [FIRST_DAY + datetime.timedelta(days=i) for i in range(count)]


def split_days(seed: int = 0) -> tuple:
    """(training days, held-out days): disjoint, drawn once from ``seed``."""
    rng = random.Random(seed)
    train, heldout = [], []
    for day in all_days():
        (heldout if rng.randrange(HELDOUT_EVERY) == 0 else train).append(day)
    return train, heldout


def render(day: datetime.date, locale: str, style: str) -> dict:
    from babel.dates import format_date

    return {"source": format_date(day, style, locale=locale), "target": day.isoformat()}


def sample_rows(days: list, count: int, seed: int) -> list:
    """``count`` rows, each a random day of ``days`` in a random locale and style."""
    rng = random.Random(seed)
    return [render(rng.choice(days), rng.choice(LOCALES), rng.choice(STYLES)) for _ in range(count)]


def every_style(days: list) -> list:
    """Every day of ``days`` in every locale and style (for the tokenizer's text)."""
    return [render(day, locale, style) for day in days for locale in LOCALES for style in STYLES]


def write_jsonl(rows: list, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
