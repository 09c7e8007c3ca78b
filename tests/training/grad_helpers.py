"""Helpers for the gradient tests: torch autograd as the reference, never our own numbers."""
import numpy as np

# Tolerances of issue 15 for per-op gradients: relative error of the whole tensor.
TOLERANCE = {np.float64: 1e-6, np.float32: 1e-4}


def relative_error(ours, reference):
    """||ours - reference|| / ||reference|| (the plain difference when the reference is 0)."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = np.linalg.norm(reference)
    difference = np.linalg.norm(ours - reference)
    return difference / scale if scale > 0 else difference


def assert_close_grad(ours, reference, dtype, what=""):
    error = relative_error(ours, reference)
    assert error <= TOLERANCE[np.dtype(dtype).type], f"{what}: relative error {error:.3g}"


def leaf(torch, array):
    """A torch leaf tensor with requires_grad, holding a copy of ``array``."""
    return torch.tensor(np.array(array), requires_grad=True)


def upstream(rng, shape, dtype):
    """A random gradient arriving at an op's output (so every output element matters)."""
    return rng.standard_normal(shape).astype(dtype)
