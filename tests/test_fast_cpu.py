"""ops.linear's CPU speed paths compute the same product as x @ W.T, whatever the layout."""
import numpy as np
import pytest

from minibertgen import ops


@pytest.mark.parametrize("rows", [1, 2, 4, 32, 33, 96, 200])
@pytest.mark.parametrize("shape", [(4100, 64), (300, 40)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_linear_matches_the_plain_product(rows, shape, order, monkeypatch):
    monkeypatch.setattr(ops, "_CHUNK_BYTES", 64 * 4 * 1000)  # tall weights: blocks of 1000 rows and a rest
    rng = np.random.default_rng(rows)
    weight = np.asarray(rng.standard_normal(shape, dtype=np.float32), order=order)
    bias = rng.standard_normal(shape[0], dtype=np.float32)
    x = rng.standard_normal((rows, shape[1]), dtype=np.float32)
    got = ops.linear(x[None], weight, bias)[0]  # [1, rows, in] -> [1, rows, out]
    want = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert got.shape == (rows, shape[0]) and got.flags.c_contiguous


def test_tall_weight_in_chunks_covers_every_row_once(monkeypatch):
    monkeypatch.setattr(ops, "_CHUNK_BYTES", 8 * 4 * 300)  # blocks of 300 rows: 16 and a rest of 200
    weight = (np.arange(5000 * 8, dtype=np.float32).reshape(5000, 8) % 7) + np.arange(5000)[:, None]
    x = np.eye(8, dtype=np.float32)[:3]  # picks columns 0, 1, 2 of each weight row
    np.testing.assert_array_equal(ops._tall_weight_in_chunks(weight, x), weight[:, :3].T)
