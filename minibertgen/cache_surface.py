"""transformers' face of the KV cache: what ``past_key_values`` is to a user.

:class:`EncoderDecoderCache` is the teaching cache (cache.KVCache: the buffers, their
update, beam reordering) plus the read-only views transformers' EncoderDecoderCache
offers: ``to_legacy_cache()``, ``self_attention_cache`` / ``cross_attention_cache`` with
``.layers[i].keys`` / ``.values``, ``layers``, indexing and iteration.
"""
from __future__ import annotations

from .cache import KVCache

__all__ = ["EncoderDecoderCache"]


class EncoderDecoderCache(KVCache):
    """Self-attention keys/values (growing) and cross-attention keys/values (fixed), per layer,
    seen as transformers' EncoderDecoderCache."""

    def to_legacy_cache(self):
        """The transformers tuple form: per layer (self_k, self_v, cross_k, cross_v)."""
        out = []
        for layer in range(self.num_layers):
            k = self.keys[layer][:, :, :self.length] if self.keys[layer] is not None else None
            v = self.values[layer][:, :, :self.length] if self.values[layer] is not None else None
            cross = self.cross[layer] or (None, None)
            out.append((k, v, *cross))
        return tuple(out)

    # -- transformers' Cache surface (read-only views) ---------------------------------------
    @property
    def self_attention_cache(self):
        """``cache.self_attention_cache.layers[i].keys`` [batch, heads, length, head_dim], as transformers."""
        return CacheLayers([(self.keys[i], self.values[i]) for i in range(self.num_layers)], self.length)

    @property
    def cross_attention_cache(self):
        """``cache.cross_attention_cache.layers[i].keys`` [batch, heads, src, head_dim]."""
        return CacheLayers([self.cross[i] or (None, None) for i in range(self.num_layers)], None)

    @property
    def layers(self):
        """The self-attention layers (``cache.layers[i].keys`` / ``.values``)."""
        return self.self_attention_cache.layers

    def __getitem__(self, layer: int):
        """(self keys, self values, cross keys, cross values) of one layer, as to_legacy_cache."""
        if not -self.num_layers <= layer < self.num_layers:
            raise KeyError(f"the cache has {self.num_layers} layers: no layer {layer}")
        return self.to_legacy_cache()[layer]

    def __iter__(self):
        return iter(self.to_legacy_cache())


class CacheLayer:
    """One layer's keys and values, viewed as transformers' cache layers show them."""

    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class CacheLayers:
    """Per-layer views (``.layers[i].keys``) of buffers filled up to ``length`` (None: all)."""

    def __init__(self, pairs, length):
        self.layers = [CacheLayer(*(None if a is None else (a if length is None else a[:, :, :length])
                                    for a in pair)) for pair in pairs]
        self.length = length

    def get_seq_length(self) -> int:
        return self.length or 0
