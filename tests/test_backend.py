import importlib.util

import numpy as np
import pytest

from minibertgen.backend import Device, array_module, parse_device, resolve_dtype, to_device

HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.mark.parametrize("value", [None, "cpu", "CPU", -1])
def test_cpu_spellings(value):
    assert parse_device(value) == Device("cpu")


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "cuda:-1", 2.5, True, -3])
def test_bad_device_is_named(value):
    with pytest.raises((ValueError, TypeError), match="device="):
        parse_device(value)


@pytest.mark.skipif(HAS_CUPY, reason="checks the message given when CuPy is absent")
@pytest.mark.parametrize("value", ["cuda", "cuda:1", 0, 3])
def test_gpu_without_cupy_is_a_clear_error(value):
    with pytest.raises(RuntimeError, match=r"needs CuPy.*minibertgen\[gpu\]"):
        parse_device(value)


def test_array_module_and_to_device_on_cpu():
    x = [[1, 2], [3, 4]]
    arr = to_device(x, Device("cpu"), dtype=np.int64)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.int64
    assert array_module(arr) is np


@pytest.mark.parametrize("given, stored, expected", [
    (None, np.float16, np.float32), ("auto", np.float16, np.float16), ("auto", None, np.float32),
    ("float16", None, np.float16), ("bfloat16", None, np.float32), (np.float64, None, np.float64),
])
def test_dtype_policy(given, stored, expected):
    assert resolve_dtype(given, stored) == np.dtype(expected)


@pytest.mark.parametrize("bad", ["int8", "float8", np.int32])
def test_bad_dtype(bad):
    with pytest.raises(ValueError, match="dtype="):
        resolve_dtype(bad)
