"""The sampling warpers take transformers' filter_value (issue 33): what a dropped token's
score becomes (-inf by default; 0.0 in transformers' own tests).  Compared live."""
import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb

torch = require_module("torch")
T = require_module("transformers")

WARPERS = [("TopKLogitsWarper", (3,)), ("TopPLogitsWarper", (0.7,)), ("MinPLogitsWarper", (0.1,)),
           ("TypicalLogitsWarper", (0.6,)), ("EpsilonLogitsWarper", (0.05,)), ("EtaLogitsWarper", (0.05,))]


@pytest.mark.parametrize("name, args", WARPERS)
@pytest.mark.parametrize("filter_value", [0.0, -3.5, -np.inf])
def test_filter_value_as_transformers(name, args, filter_value):
    scores = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32) * 2
    ids = np.zeros((3, 2), dtype=np.int64)
    theirs = getattr(T, name)(*args, filter_value=filter_value)(torch.tensor(ids), torch.tensor(scores)).numpy()
    ours = getattr(mb, name)(*args, filter_value=filter_value)(ids, scores)
    assert (theirs == filter_value).any()  # something was dropped
    np.testing.assert_array_equal(ours, theirs)


def test_filter_value_must_be_a_number():
    with pytest.raises(ValueError, match="filter_value='x'"):
        mb.TopKLogitsWarper(3, filter_value="x")
