"""The decode step replayed from a captured CUDA graph (CuPy only).

Why: at batch 1 a decode step of the 24-layer model is ~750 small kernels, and Python
needs ~10 us to launch each one, so the GPU waits on the host.  A CUDA graph records
the whole step once (``Stream.begin_capture`` ... ``end_capture``) and then launches it
as one unit: the host cost of a step drops to a handful of calls.

What a graph needs: every replay must run the same kernels on the same memory.  So the
step is written to have fixed shapes and fixed addresses:

* the KV cache is allocated once at full capacity (generate() reserves max_length) and
  filled with zeros, and attention always covers the whole capacity; positions not yet
  written are hidden by the attention mask, which is a fixed buffer [rows, capacity]
  whose column t is switched on when token t arrives (rather than slicing the cache to
  the current length, which would change shapes every step);
* the new key/value is written at a position held in device memory
  (``_write_at``), not at a Python int baked into the graph;
* the token, its position and that mask live in fixed buffers that are updated before
  each replay; the intermediate arrays live in a memory pool private to the graph, so
  nothing else can reuse their memory between replays.

The model code itself is unchanged: the captured step is model.decoder_step, the same
function the eager loop calls, given those buffers and a cache view whose
``update_self`` writes at the device-side position.  The first
step (the prompt, several tokens) and the second (warm-up: compiles kernels and fills
the private pool, then is captured) run eagerly; replays start at the third.  Anything
the graph cannot do (relative position embeddings, which need host positions) falls
back to the eager step, as does any capture error (with a warning).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from ..model import decoder_step
from ..dispatch import using

__all__ = ["GraphedDecoderStep", "graph_supported"]


def graph_supported(decoder, cache) -> bool:
    """Can this decoder's step be captured?  CuPy with the fused kernels on (the readable
    path calls cuBLAS, which CuPy will not capture), a cache, absolute positions, and
    float weights or 4-bit ones that the fused 4-bit kernel multiplies (cuda_fourbit.py;
    8-bit weights and odd 4-bit shapes go through cuBLAS)."""
    if cache is None or decoder.device.kind != "cuda" or decoder.kernels is None:
        return False
    from ..quantization.params import quantized_weights
    from .cuda_fourbit import shape_fits
    from .cuda_kernels import supports

    if not all(shape_fits(weight, 1, decoder.dtype) for weight in quantized_weights(decoder.params).values()):
        return False
    return decoder.config.position_embedding_type == "absolute" and supports(decoder.dtype)


@functools.lru_cache(maxsize=None)
def _write_kernel():
    import cupy

    # buffer[b, h, position, d] = src[b, h, 0, d] for every (b, h, d), position read from device memory
    return cupy.ElementwiseKernel(
        "T src, raw int64 position, int64 capacity, int64 head_dim", "raw T buffer",
        "buffer[((i / head_dim) * capacity + position[0]) * head_dim + i % head_dim] = src;",
        "minibertgen_write_at")


def _write_at(buffer, new, position):
    """buffer [rows, heads, capacity, d] <- new [rows, heads, 1, d] at the device index ``position``."""
    _write_kernel()(new, position, buffer.shape[2], buffer.shape[3], buffer)  # one thread per element of new


class _StaticCache:
    """The cache as a captured step sees it: full-capacity buffers (the eager cache's own
    arrays), each new key/value written at a position held in device memory."""

    def __init__(self, cache, position):
        self.cache = cache
        self.position = position  # int64 [1] on the device: where the new token goes

    def update_self(self, layer, key, value, start):
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        _write_at(keys, key, self.position)  # `start` is the host position at capture: not used
        _write_at(values, value, self.position)
        return keys, values  # all of capacity: the mask hides the rest

    def get_cross(self, layer):
        return self.cache.get_cross(layer)

    def set_cross(self, layer, key, value):
        self.cache.set_cross(layer, key, value)


class GraphedDecoderStep:
    """Stands in for generation.step.DecoderStep on the GPU: same ``__call__`` and ``reorder``."""

    def __init__(self, eager):
        if getattr(eager, "records", None):  # generate() never asks this (generation/step.py: wants_cuda_graph)
            raise ValueError(f"GraphedDecoderStep: the step records {', '.join(eager.records)}, but a captured "
                             "step returns logits only; run the eager DecoderStep instead")
        import cupy

        self.eager = eager  # the DecoderStep: its decoder, cache, encoder states, decoder-alone mask
        self.decoder, self.cache = eager.decoder, eager.cache
        self.cupy = cupy
        from .cuda_kernels import MAX_FEW_ROWS

        self.max_rows = MAX_FEW_ROWS  # more rows than this: linears use cuBLAS, which cannot be captured
        self.graph = None
        self.failed = False
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()  # private to the graph's intermediates

    # -- per step ----------------------------------------------------------------------------
    def __call__(self, ids):
        seen = self.cache.get_seq_length()
        if self.failed or ids.shape[1] - seen != 1 or seen == 0 or ids.shape[0] > self.max_rows:
            return self.eager(ids)  # the prompt (several tokens at once) runs eagerly
        if self.graph is None:
            return self._capture(ids, seen)
        return self._replay(ids, seen)

    def reorder(self, rows):
        self.eager.reorder(rows)  # in place: the buffers keep their addresses

    # -- capture ---------------------------------------------------------------------------
    def _setup_buffers(self, ids, seen):
        xp = self.cupy
        rows, capacity = ids.shape[0], self.cache.keys[0].shape[2]
        self.token = xp.empty((rows, 1), dtype=np.int64)
        self.write_position = xp.full((1,), seen, dtype=np.int64)
        if self.eager.mask is not None:  # decoder alone: left padding, positions count real tokens
            base = self.eager.mask[:, :capacity]  # [rows, capacity]
            # [rows, seen + 1] -> [rows, 1]: real tokens so far, minus one
            self.positions = (base[:, :seen + 1].sum(axis=1, keepdims=True) - 1).astype(np.int64)
        else:
            base = xp.ones((rows, capacity), dtype=np.int64)
            self.positions = xp.full((rows, 1), seen, dtype=np.int64)  # [rows, 1]
        self.attention = xp.zeros((rows, capacity), dtype=self.decoder.dtype)  # keys 0..seen on, the rest off
        self.attention[:, :seen + 1] = base[:, :seen + 1]
        self.static_cache = _StaticCache(self.cache, self.write_position)

    def _forward(self, seen):
        """One decode step on the fixed buffers: [rows, 1] token -> [rows, vocab] logits."""
        decoder = self.decoder
        with using(decoder.kernels):
            out = decoder_step(decoder.params, decoder.config, self.token, self.static_cache, seen,
                               attention_mask=self.attention, position_ids=self.positions,
                               encoder_states=self.eager.encoder_states, encoder_mask=self.eager.encoder_mask)
        return out["logits"][:, -1]

    def _capture(self, ids, seen):
        cp = self.cupy
        self._setup_buffers(ids, seen)
        self.token[...] = ids[:, -1:]
        self.stream.wait_event(cp.cuda.get_current_stream().record())  # buffers, cache, ids are ready
        try:
            with cp.cuda.using_allocator(self.pool.malloc), self.stream:
                warm = self._forward(seen).copy()  # warm-up: this step's real result (compiles, fills the pool)
                self.stream.begin_capture()
                try:
                    self.output = self._forward(seen)  # recorded, not run; its memory stays ours
                finally:
                    self.graph = self.stream.end_capture()
        except Exception as exc:  # any capture problem: decode eagerly from here on
            self.failed, self.graph = True, None
            self.stream.synchronize()
            warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); decoding eagerly",
                          RuntimeWarning, stacklevel=3)
            return self.eager(ids)  # rewrites this step's keys/values at the same position
        cp.cuda.get_current_stream().wait_event(self.stream.record())
        self.cache.set_seq_length(seen + 1)  # the warm-up wrote this token's keys/values
        return warm

    def _replay(self, ids, seen):
        cp = self.cupy
        ready = cp.cuda.get_current_stream().record()  # ids and any beam reorder are done
        with self.stream:
            self.stream.wait_event(ready)
            self.token[...] = ids[:, -1:]
            self.write_position += 1  # == seen
            self.positions += 1
            self.attention[:, seen] = 1
            self.graph.launch(self.stream)
            logits = self.output.copy()  # the next replay overwrites self.output
        cp.cuda.get_current_stream().wait_event(self.stream.record())
        self.cache.set_seq_length(seen + 1)
        return logits
