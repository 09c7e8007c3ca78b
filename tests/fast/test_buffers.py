"""fast/buffers.py: last step's big array handed out again only when nothing else holds it."""
import gc

import numpy as np

from minibertgen.fast import buffers

SHAPE = (1024, 2049)  # 8 MiB of float32: big enough to be kept


def test_an_array_nobody_holds_is_handed_out_again():
    owner = np.zeros(3)
    first = buffers.reusable(owner, "grad", SHAPE, np.float32)
    address = first.ctypes.data
    del first
    again = buffers.reusable(owner, "grad", SHAPE, np.float32)
    assert again.ctypes.data == address


def test_an_array_still_held_is_never_handed_out_again():
    owner = np.zeros(3)
    held = buffers.reusable(owner, "grad", SHAPE, np.float32)
    held[:] = 7.0
    other = buffers.reusable(owner, "grad", SHAPE, np.float32)
    assert not np.shares_memory(held, other)
    view = other[3:5]  # a view keeps its base alive: still held
    del other
    third = buffers.reusable(owner, "grad", SHAPE, np.float32)
    assert not np.shares_memory(third, view)
    assert (held == 7.0).all()


def test_purposes_owners_shapes_and_orders_are_kept_apart():
    a, b = np.zeros(3), np.zeros(3)
    first = buffers.reusable(a, "grad", SHAPE, np.float32)
    address = first.ctypes.data
    del first
    assert buffers.reusable(b, "grad", SHAPE, np.float32).ctypes.data != address  # another owner
    assert buffers.reusable(a, "other", SHAPE, np.float32).ctypes.data != address  # another purpose
    fortran = buffers.reusable(a, "grad", SHAPE, np.float32, order="F")  # another order: a new array
    assert fortran.flags.f_contiguous and fortran.shape == SHAPE


def test_small_arrays_are_not_kept_and_a_dead_owner_drops_its_array():
    owner = np.zeros(3)
    assert buffers.reusable(owner, "grad", (3, 4), np.float32).shape == (3, 4)
    assert not any(key[0] == id(owner) for key in buffers._KEPT)
    buffers.reusable(owner, "grad", SHAPE, np.float32)
    assert any(key[0] == id(owner) for key in buffers._KEPT)
    key = (id(owner), "grad")
    del owner
    gc.collect()
    assert key not in buffers._KEPT
