"""Loud weights (DESIGN.md): parameters drawn so that every one of them moves the output.

Default initialisation (std 0.02) leaves distance embeddings, token types, biases and
LayerNorm shifts moving the logits by ~1e-5, below a 1e-4 tolerance, so a wrong formula
or a dropped term there passes.  Here:

* embedding tables (word, position, token type, relative distance): unit scale;
* weight matrices: ~ 1 / sqrt(fan_in), so every layer's output is unit scale too;
* LayerNorm gains 1 +- 0.5 (uniform), every bias (LayerNorm shifts included) ~ 0.3.

The values are a function of the parameter's name and a seed only, so torch's model and
ours get the same numbers whatever order they list their parameters in.
"""
import zlib

import numpy as np

EMBEDDINGS = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
              "distance_embedding.weight")


def loud_value(name, shape, seed=0):
    """The loud value of parameter ``name`` (a checkpoint name) of ``shape``, float32."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith(("LayerNorm.weight", "layer_norm.weight")):
        value = 1.0 + rng.uniform(-0.5, 0.5, shape)
    elif name.endswith("bias"):
        value = 0.3 * rng.standard_normal(shape)
    elif name.endswith(EMBEDDINGS):
        value = rng.standard_normal(shape)
    elif len(shape) == 2:
        value = rng.standard_normal(shape) / np.sqrt(shape[1])  # [out, in]: ~ 1 / sqrt(fan_in)
    else:
        raise ValueError(f"{name}: no loud rule for a parameter of shape {tuple(shape)}")
    return value.astype(np.float32)


def make_torch_model_loud(model, seed=0):
    """Overwrite every parameter of a torch model (tied ones once) with its loud value."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(loud_value(name, tuple(param.shape), seed)))
    return model


def make_our_model_loud(model, seed=0):
    """Overwrite every array of one of our models in place (a tied array gets one value: the
    tie's last name's, which is what both names then read)."""
    for name, array in model.state_dict().items():
        array[...] = loud_value(name, array.shape, seed)
    return model
