"""fast/native.py: the C loops against the NumPy code they replace, bit for bit, and the
ways the library is refused (then the training table keeps its NumPy blocks)."""
import ctypes

import numpy as np
import pytest

from minibertgen import optim
from minibertgen.fast import cpu, cpu_optim, cpu_training, gelu_blocks, native, threads

HYPER = dict(step=7, lr=3e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)


@pytest.fixture
def lib():
    """The library; a machine with a C compiler must build it and pass its check (a loop
    whose bits differ is refused at load, so a wrong loop would otherwise only skip here)."""
    import os
    import shutil

    built = native.library()
    if built is None:
        has_compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if has_compiler and os.environ.get("MINIBERTGEN_NATIVE", "1") != "0":
            pytest.fail(f"a C compiler is here but the native loops are not used: {native.status()}")
        pytest.skip(f"no native loops here: {native.status()}")
    return built


def _edge_values(n, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(n)).astype(np.float32)
    x[:8] = (0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3e38, -3e38)  # zeros, infinities, NaN, extremes
    return x


@pytest.mark.parametrize("n", [9, 15, 4099, 3 * cpu.BLOCK + 7])  # (8 edge values first)
def test_adamw_update_in_c_is_the_reference_bit_for_bit(lib, n):
    rng = np.random.default_rng(n)
    w, m = _edge_values(n, 1), (0.01 * rng.standard_normal(n)).astype(np.float32)
    g, v = _edge_values(n, 2)[::-1].copy(), np.abs(0.01 * rng.standard_normal(n)).astype(np.float32)
    want = [a.copy() for a in (w, m, v)]
    with np.errstate(all="ignore"):
        optim.adamw_update.reference(want[0], g, want[1], want[2], **HYPER)
        native.adamw_update(lib, w, g, m, v, 0, n, **HYPER)
    for name, got, expected in zip("wmv", (w, m, v), want):
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_adamw_update_in_c_on_part_of_the_arrays_leaves_the_rest(lib):
    w, g, m, v = (np.full(100, value, dtype=np.float32) for value in (1.0, 0.5, 0.0, 0.0))
    native.adamw_update(lib, w, g, m, v, 10, 20, **HYPER)
    assert (w[:10] == 1).all() and (w[20:] == 1).all() and (w[10:20] != 1).all()
    assert (m[:10] == 0).all() and (m[10:20] != 0).all()


@pytest.mark.parametrize("n", [11, 4099, 2 * cpu.BLOCK + 5])
def test_gelu_loops_in_c_are_the_numpy_blocks_bit_for_bit(lib, n):
    x, dout = _edge_values(n, 3), np.random.default_rng(4).standard_normal(n).astype(np.float32)
    for c_loop, numpy_block in ((lambda out: native.gelu_forward(lib, x, out, 0, n),
                                 lambda out: gelu_blocks.gelu_block(x, out)),
                                (lambda out: native.gelu_backward(lib, dout, x, out, 0, n),
                                 lambda out: gelu_blocks.gelu_backward_block(dout, x, out))):
        got, want = np.empty_like(x), np.empty_like(x)
        with np.errstate(all="ignore"):
            c_loop(got)
            numpy_block(want)
        np.testing.assert_array_equal(got, want)


def test_the_training_table_gives_the_same_bits_with_and_without_the_c_loops(lib, monkeypatch):
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal((4, 9, 1536))).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    w, g, m, v = (rng.standard_normal((1536, 384)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    monkeypatch.setattr(threads, "_TRAINING_POOL", [threads.make_pool()])

    def run():
        arrays = [a.copy() for a in (w, m, v)]
        cpu_optim.adamw_update(arrays[0], g, arrays[1], arrays[2], **HYPER)
        return [cpu.apply_activation(cpu.ops.gelu, x), cpu_training.activation_backward("gelu", dout, x), *arrays]

    with_c = run()
    monkeypatch.setitem(native._STATE, "library", None)
    without_c = run()
    for got, want in zip(with_c, without_c):
        np.testing.assert_array_equal(got, want)


def _fresh_load(monkeypatch, **environment):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return native._load()


def test_minibertgen_native_0_turns_the_loops_off(monkeypatch):
    library, why = _fresh_load(monkeypatch, MINIBERTGEN_NATIVE="0")
    assert library is None and "MINIBERTGEN_NATIVE=0" in why


def test_a_compiler_that_fails_leaves_the_numpy_blocks(monkeypatch):
    library, why = _fresh_load(monkeypatch, CC="false")  # a command that always fails
    assert library is None and "false failed" in why and "NumPy blocks" in why


class _OffByOneUlp:
    """A stand-in library whose AdamW rounds its weights one float32 step away from the reference."""

    def __init__(self, real):
        self.real = real

    def adamw_update(self, w, g, m, v, n, *constants):
        self.real.adamw_update(w, g, m, v, n, *constants)
        weights = np.ctypeslib.as_array(ctypes.cast(w, ctypes.POINTER(ctypes.c_float)), (n,))
        weights[:] = np.nextafter(weights, np.float32(np.inf))

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_library_whose_bits_differ_is_refused(lib):
    assert native._self_check(lib) is None
    assert native._self_check(_OffByOneUlp(lib)) == "adamw_update"


@pytest.mark.parametrize("cc, said", [("no-such-compiler-here", "could not build"), ('gcc "-m64', "cannot be read")])
def test_a_compiler_that_cannot_run_leaves_the_numpy_blocks(monkeypatch, cc, said):
    library, why = _fresh_load(monkeypatch, CC=cc)
    assert library is None and said in why and "NumPy blocks" in why


def test_cc_may_carry_flags(monkeypatch):
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here")
    library, why = _fresh_load(monkeypatch, CC=f"{compiler} -DMINIBERTGEN_TEST=1")
    assert library is not None, why
    assert native._self_check(library) is None


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_layer_norm_loops_in_c_are_as_near_the_exact_values_as_the_numpy_blocks(lib, rows, monkeypatch):
    """Not bitwise: the C loops add their means and column sums in float64, the NumPy blocks in
    BLAS's float32 order; both are float32 roundings of the exact (float64) LayerNorm."""
    from minibertgen import ops, ops_backward

    rng = np.random.default_rng(rows)
    x, residual, dout = (rng.standard_normal((rows, 384)).astype(np.float32) for _ in range(3))
    weight, bias = (1 + 0.5 * rng.standard_normal(384)).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    monkeypatch.setattr(threads, "_TRAINING_POOL", [threads.make_pool()])
    with_c = (cpu.layer_norm(x, weight, bias, 1e-12, residual=residual),
              *cpu_training.layer_norm_backward(dout, x, weight, 1e-12, residual=residual))
    monkeypatch.setitem(native._STATE, "library", None)
    numpy_blocks = (cpu.layer_norm(x, weight, bias, 1e-12, residual=residual),
                    *cpu_training.layer_norm_backward(dout, x, weight, 1e-12, residual=residual))
    wide = [a.astype(np.float64) for a in (x, residual, dout, weight, bias)]
    exact = (ops.layer_norm.reference(wide[0], wide[3], wide[4], 1e-12, residual=wide[1]),
             *ops_backward.layer_norm_backward.reference(wide[2], wide[0], wide[3], 1e-12, residual=wide[1]))
    for name, mine, theirs, truth in zip(("y", "ds", "dweight", "dbias"), with_c, numpy_blocks, exact):
        assert mine.dtype == np.float32 and mine.shape == truth.shape
        bound = 2e-6 * np.abs(truth).max()
        np.testing.assert_allclose(mine, truth, rtol=0, atol=bound, err_msg=name)
        np.testing.assert_allclose(theirs, truth, rtol=0, atol=bound, err_msg=name)


def test_no_writable_temporary_directory_leaves_the_numpy_blocks(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-directory"
    monkeypatch.setattr(native.tempfile, "tempdir", str(missing))
    library, why = native._load()
    assert library is None and "could not build" in why
