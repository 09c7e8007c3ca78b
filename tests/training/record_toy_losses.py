"""Record torch's first 50 losses of tests/fixtures/generation/train_toy_bert2bert.py
(the script's model, seed, data, AdamW, schedule and clipping, 2 threads) into
toy_losses.json, the reference of test_toy_reproduction_live.py.

    python tests/training/record_toy_losses.py
"""
import json
import sys
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "fixtures" / "generation"))
import train_toy_bert2bert as script  # noqa: E402

STEPS, TOTAL, BATCH = 50, 350, 64


def schedule_factor(step):
    return min(1.0, (step + 1) / 50) * (1 - step / TOTAL)  # the script's LambdaLR


def batches():
    import random

    rng = random.Random(0)
    for _ in range(STEPS):
        pairs = [script.make_example(rng) for _ in range(BATCH)]
        yield script.pad([p[0] for p in pairs], script.PAD), script.pad([p[1] for p in pairs], -100)


def torch_losses():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    try:
        model = script.build_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor)
        model.train()
        losses = []
        for ids, labels in batches():
            loss = model(input_ids=ids, attention_mask=(ids != script.PAD).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses
    finally:
        torch.set_num_threads(threads)


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__}


if __name__ == "__main__":
    record = {**versions(), "threads": 2, "losses": torch_losses()}
    (HERE / "toy_losses.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(record['losses'])} losses: {record['losses'][0]:.4f} .. {record['losses'][-1]:.4f}")
