"""Both CPU cores on our own terms: BLAS at one thread per call, and our work split in two.

Left to itself, OpenBLAS runs each product on both cores and then keeps its second
thread spinning for a while, so the elementwise work between products (GELU, softmax,
LayerNorm), which NumPy runs on one core, cannot use the other.  Here, inside a model's
forward pass, BLAS is limited to one thread (threadpoolctl) and the big ops are split in
halves instead: the calling thread computes one half while one worker of ours computes
the other.  NumPy releases the GIL inside BLAS calls and ufunc loops, so the halves run
at the same time.

Each half is the same computation on its own rows or output features, so the numbers
are those of the whole op.  Small ops are not split (handing work to the worker costs
~10-20 us).

The pool is **off by default**: measured against OpenBLAS's own two threads
(benchmarks/bench_cpu_pool.py, README "Speed on the CPU") it lost on greedy decoding and
short inputs and gained at most a few per cent on the 8x128 encoder.  Set
``MINIBERTGEN_CPU_POOL=1`` to turn it on (it stays off on one core or without
threadpoolctl); the option is read when the CPU table is first chosen (fast.kernels_for),
not when minibertgen is imported.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading

__all__ = ["POOL", "TwoCores", "choose_pool", "training_pool", "in_blocks", "in_halves", "two_shares",
           "in_two_shares"]


class TwoCores:
    """The calling thread plus one worker thread: ``pair(a, b)`` runs a() here and b() there."""

    def __init__(self, controller):
        self.controller = controller  # threadpoolctl.ThreadpoolController
        self.tasks, self.done = queue.SimpleQueue(), queue.SimpleQueue()
        self.lock = threading.Lock()  # one pair at a time (two threads sharing a model)
        threading.Thread(target=self._work, name="minibertgen-second-core", daemon=True).start()

    def _work(self):
        while True:
            task = self.tasks.get()
            try:
                self.done.put((task(), None))
            except BaseException as exc:  # handed back to the caller, raised there
                self.done.put((None, exc))

    def pair(self, here, there):
        """Run ``here()`` on this thread and ``there()`` on the worker; return both results."""
        if not self.lock.acquire(blocking=False):  # the worker is busy for another thread: do both here
            return here(), there()
        try:
            self.tasks.put(there)
            try:
                mine = here()
            finally:
                theirs, error = self.done.get()  # always collect the worker's half
            if error is not None:
                raise error
            return mine, theirs
        finally:
            self.lock.release()

    def one_blas_thread(self):
        """A context in which BLAS runs each call on one thread (restored afterwards)."""
        return self.controller.limit(limits=1, user_api="blas")


def make_pool():
    """A TwoCores pool, or None on one core or without threadpoolctl."""
    if (os.cpu_count() or 1) < 2:
        return None
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return TwoCores(ThreadpoolController())


POOL = None  # the forward pool: made by choose_pool() when MINIBERTGEN_CPU_POOL=1
_CHOSEN = []


def choose_pool():
    """Read the MINIBERTGEN_CPU_POOL option, once (when the CPU table is first chosen):
    make the forward pool if it asks for one and none was set."""
    global POOL
    if not _CHOSEN:
        _CHOSEN.append(True)
        if POOL is None and os.environ.get("MINIBERTGEN_CPU_POOL", "0") == "1":
            POOL = make_pool()
    return POOL


def forward_context():
    """What a CPU forward pass runs inside: BLAS at one thread while our pool splits the work."""
    return POOL.one_blas_thread() if POOL is not None else contextlib.nullcontext()


_TRAINING_POOL = []


def training_pool():
    """The pool the training table splits its elementwise work over (fast/cpu_training.py):
    made on first use, None on one core or with ``MINIBERTGEN_TRAINING_POOL=0``.

    Unlike the forward pool it is on by default: AdamW's update and GELU's derivative are
    ufunc loops over hundreds of megabytes with no BLAS call between them, and two cores
    stream them faster than one (benchmarks/results/training.txt).
    """
    if not _TRAINING_POOL:
        wanted = os.environ.get("MINIBERTGEN_TRAINING_POOL", "1") != "0"
        _TRAINING_POOL.append(POOL or make_pool() if wanted else None)
    return _TRAINING_POOL[0]


# -- work cut in two for the training pool (fast/cpu_training.py, fast/cpu_optim.py) --------

def in_blocks(size, fn, block):
    """fn(part) for each block-sized slice of range(size); the first half of the blocks on
    this core, the second half on the other (training_pool()) when there is one."""
    def run(first, last):
        for start in range(first, last, block):
            fn(slice(start, min(start + block, last)))

    pool = training_pool()
    if pool is None or size < 4 * block:
        run(0, size)
        return
    middle = (size // 2 + block - 1) // block * block  # halves on block boundaries
    pool.pair(lambda: run(0, middle), lambda: run(middle, size))


def in_halves(size, fn, minimum):
    """[fn(start, stop)] over range(size): two halves on both cores (training_pool()) when
    there is a pool and at least ``minimum`` elements, else one call on this core."""
    pool = training_pool()
    if pool is None or size < max(2, minimum):
        return [fn(0, size)]
    middle = size // 2
    return list(pool.pair(lambda: fn(0, middle), lambda: fn(middle, size)))


def two_shares(sizes, half):
    """The elements of arrays of ``sizes`` in order, cut after ``half`` of them: two lists of
    (array index, start, stop)."""
    first, second, seen = [], [], 0
    for index, size in enumerate(sizes):
        cut = min(max(half - seen, 0), size)
        if cut:
            first.append((index, 0, cut))
        if cut < size:
            second.append((index, cut, size))
        seen += size
    return first, second


def in_two_shares(sizes, run, minimum):
    """run(share) over all elements of arrays of ``sizes``, a share being a list of (array
    index, start, stop): two shares of equal size on both cores when there is a pool and at
    least ``minimum`` elements, else one share here.  -> the runs' results, in share order."""
    total = sum(sizes)
    pool = training_pool()
    if pool is None or total < minimum:
        return [run([(index, 0, size) for index, size in enumerate(sizes)])]
    first, second = two_shares(sizes, total // 2)
    return list(pool.pair(lambda: run(first), lambda: run(second)))
