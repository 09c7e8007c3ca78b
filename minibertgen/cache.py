"""The key/value cache that makes step-by-step decoding cheap.

When the decoder produces token t it needs the keys and values of tokens 0..t-1 in
every self-attention layer.  Recomputing them costs O(t) per step; keeping them costs
memory.  This cache keeps them:

* **self-attention**: one buffer per layer, [batch, heads, capacity, head_dim],
  allocated once and filled in place (``buffer[:, :, t:t+n] = new``) -- no
  concatenation per step.  When a step would overflow the buffer it is doubled
  (rarely: generate() reserves the full length up front).
* **cross-attention**: the encoder's keys/values, computed at the first step and
  reused for every later one, because the encoder output does not change.
* **beam search** reorders rows (``reorder(beam_idx)``) when beams are re-ranked.

This is the teaching cache.  ``past_key_values`` returned by the models is its
transformers-shaped subclass, cache_surface.EncoderDecoderCache (the same buffers, plus
transformers' read-only views); pass it back in to continue decoding from where it stopped.
"""
from __future__ import annotations

from .backend import array_module

__all__ = ["KVCache"]


class KVCache:
    """Self-attention keys/values (growing) and cross-attention keys/values (fixed), per layer."""

    def __init__(self, num_layers: int, capacity: int | None = None):
        self.num_layers = num_layers
        self.capacity = capacity  # tokens to reserve at the first update (None: just what is needed)
        self.keys = [None] * num_layers  # each [batch, heads, capacity, head_dim]
        self.values = [None] * num_layers
        self.cross = [None] * num_layers  # each (keys, values) [batch, heads, src, head_dim]
        self.length = 0  # tokens stored so far (the same in every layer)

    def get_seq_length(self) -> int:
        return self.length

    def __len__(self) -> int:
        return self.num_layers

    # -- self-attention -------------------------------------------------------------------
    def update_self(self, layer: int, key, value, start: int):
        """Store new key/value [batch, heads, n, d] at positions start .. start + n - 1;
        return everything up to there, [batch, heads, start + n, d].

        The caller says where the new tokens go (the model's forward pass passes its
        ``past_length`` to every layer), so nothing reads the length back mid-pass.
        """
        n = key.shape[2]
        end = start + n
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self._grow(layer, key, value, end, keep=start)
        self.keys[layer][:, :, start:end] = key
        self.values[layer][:, :, start:end] = value
        self.length = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def set_seq_length(self, length: int) -> None:
        """Record that positions 0 .. length - 1 hold keys/values: fewer drops the last ones
        (assisted decoding rejects candidates); a replayed CUDA graph (fast/cuda_graph.py)
        writes the buffers without calling update_self and records the length here."""
        self.length = length

    def _grow(self, layer, key, value, needed, keep):
        xp = array_module(key)
        batch, heads, _, head_dim = key.shape
        capacity = max(needed, self.capacity or 0)
        if self.keys[layer] is not None:
            capacity = max(capacity, 2 * self.keys[layer].shape[2])
        # zeros, not empty: a CUDA-graph step (fast/cuda_graph.py) attends over the whole
        # capacity, and unwritten garbage (NaN bits) would survive its zero weights
        new_keys = xp.zeros((batch, heads, capacity, head_dim), dtype=key.dtype)
        new_values = xp.zeros((batch, heads, capacity, head_dim), dtype=value.dtype)
        if self.keys[layer] is not None:
            new_keys[:, :, :keep] = self.keys[layer][:, :, :keep]  # the positions before the new ones
            new_values[:, :, :keep] = self.values[layer][:, :, :keep]
        self.keys[layer], self.values[layer] = new_keys, new_values

    # -- cross-attention ------------------------------------------------------------------
    def get_cross(self, layer: int):
        return self.cross[layer]

    def set_cross(self, layer: int, key, value) -> None:
        self.cross[layer] = (key, value)

    # -- beam search ----------------------------------------------------------------------
    def reorder(self, beam_idx, cross: bool = False) -> None:
        """Keep rows ``beam_idx`` [batch * beams] of every buffer (beam search re-ranking).

        Only the filled part of each buffer is gathered, into the buffer itself (no new
        allocation per step).  Cross-attention keys/values are left alone unless
        ``cross=True``: beam search only ever moves rows among the beams of one sentence,
        which all hold the same encoder keys, so gathering them would copy identical rows.
        """
        n = self.length
        for layer in range(self.num_layers):
            if self.keys[layer] is not None:
                self.keys[layer][:, :, :n] = self.keys[layer][beam_idx, :, :n]
                self.values[layer][:, :, :n] = self.values[layer][beam_idx, :, :n]
            if cross and self.cross[layer] is not None:
                key, value = self.cross[layer]
                self.cross[layer] = (key[beam_idx], value[beam_idx])
