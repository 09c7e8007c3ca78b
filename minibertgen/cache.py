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

``past_key_values`` returned by the models is an :class:`EncoderDecoderCache`; pass it
back in to continue decoding from where it stopped.
"""
from __future__ import annotations

from .backend import array_module

__all__ = ["EncoderDecoderCache"]


class EncoderDecoderCache:
    """Self-attention keys/values (growing) and cross-attention keys/values (fixed), per layer."""

    def __init__(self, num_layers: int, capacity: int | None = None):
        self.num_layers = num_layers
        self.capacity = capacity  # tokens to reserve at the first update (None: just what is needed)
        self.keys = [None] * num_layers  # each [batch, heads, capacity, head_dim]
        self.values = [None] * num_layers
        self.cross = [None] * num_layers  # each (keys, values) [batch, heads, src, head_dim]
        self.length = 0  # tokens stored so far (the same in every layer)
        self._pending = 0  # tokens written in the current forward pass, committed by advance()

    def get_seq_length(self) -> int:
        return self.length

    def __len__(self) -> int:
        return self.num_layers

    # -- self-attention -------------------------------------------------------------------
    def update_self(self, layer: int, key, value):
        """Store new key/value [batch, heads, n, d]; return all so far [batch, heads, length + n, d]."""
        n = key.shape[2]
        end = self.length + n
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self._grow(layer, key, value, end)
        self.keys[layer][:, :, self.length:end] = key
        self.values[layer][:, :, self.length:end] = value
        self._pending = n
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _grow(self, layer, key, value, needed):
        xp = array_module(key)
        batch, heads, _, head_dim = key.shape
        capacity = max(needed, self.capacity or 0)
        if self.keys[layer] is not None:
            capacity = max(capacity, 2 * self.keys[layer].shape[2])
        # zeros, not empty: a CUDA-graph step (cuda_graph.py) attends over the whole
        # capacity, and unwritten garbage (NaN bits) would survive its zero weights
        new_keys = xp.zeros((batch, heads, capacity, head_dim), dtype=key.dtype)
        new_values = xp.zeros((batch, heads, capacity, head_dim), dtype=value.dtype)
        if self.keys[layer] is not None:
            new_keys[:, :, :self.length] = self.keys[layer][:, :, :self.length]
            new_values[:, :, :self.length] = self.values[layer][:, :, :self.length]
        self.keys[layer], self.values[layer] = new_keys, new_values

    def advance(self) -> None:
        """Commit the tokens written by the forward pass that just finished."""
        self.length += self._pending
        self._pending = 0

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

    def to_legacy_cache(self):
        """The transformers tuple form: per layer (self_k, self_v, cross_k, cross_v)."""
        out = []
        for layer in range(self.num_layers):
            k = self.keys[layer][:, :, :self.length] if self.keys[layer] is not None else None
            v = self.values[layer][:, :, :self.length] if self.values[layer] is not None else None
            cross = self.cross[layer] or (None, None)
            out.append((k, v, *cross))
        return tuple(out)
