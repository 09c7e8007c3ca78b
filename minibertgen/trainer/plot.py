"""The loss and evaluation metrics of a run as one PNG (when matplotlib is installed)."""
from __future__ import annotations

__all__ = ["plot_log_history"]


def plot_log_history(log_history, path):
    """Training loss and every eval_* metric against the step; returns the path, or None
    when matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    names = sorted({k for e in log_history for k in e if k.startswith("eval_") and isinstance(e[k], (int, float))
                    and not k.endswith(("_runtime", "_per_second"))})
    if not train and not names:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="training loss")
    for name in names:
        points = [(e["step"], e[name]) for e in log_history if name in e]
        axis.plot(*zip(*points), marker="o", label=name)
    axis.set_xlabel("step")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
