"""generate() against transformers 4.57 live, on the same cases (torch + transformers required in CI)."""
import warnings

import numpy as np
import pytest

from cases import CASES, model_inputs
from conftest import require_module
from gen_helpers import run_case, transformers_model

# A spread of the matrix (every model, greedy and each beam feature); the full matrix is
# replayed from reference.json by test_reference_recorded.py.
LIVE = [c for i, c in enumerate(CASES) if i % 3 == 0 or "single" in c["id"] or "nomask" in c["id"]]


def transformers_generate(case):
    torch = require_module("torch")
    model = transformers_model(case["model"])
    ids, mask = model_inputs(case)
    kwargs = dict(case["settings"])
    if "decoder_input_ids" in kwargs:
        kwargs["decoder_input_ids"] = torch.tensor(kwargs["decoder_input_ids"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask),
                             **kwargs)
    return out.numpy()


@pytest.mark.parametrize("case", LIVE, ids=[c["id"] for c in LIVE])
def test_matches_transformers_live(case):
    expected = transformers_generate(case)
    got = run_case(case)
    assert got.shape == expected.shape, f"{case['settings']}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(got, expected, err_msg=str(case["settings"]))


@pytest.mark.parametrize("settings", [{"num_beams": 3}, {}])
def test_scores_match_transformers(settings):
    """return_dict_in_generate + output_scores: per-step scores and sequences_scores agree."""
    torch = require_module("torch")
    case = {"model": "toy_bert2bert", "inputs": "batch", "settings": settings}
    ids, mask = model_inputs(case)
    model = transformers_model("toy_bert2bert")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), return_dict_in_generate=True,
                             output_scores=True, **settings)
    from gen_helpers import load_model
    out = load_model("toy_bert2bert").generate(ids, attention_mask=mask, return_dict_in_generate=True,
                                               output_scores=True, **settings)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    assert len(out.scores) == len(ref.scores)
    for mine, theirs in zip(out.scores, ref.scores):
        theirs = theirs.numpy()
        finite = np.isfinite(theirs)
        np.testing.assert_array_equal(np.isfinite(mine), finite)
        np.testing.assert_allclose(mine[finite], theirs[finite], atol=1e-4)
    if settings.get("num_beams", 1) > 1:
        np.testing.assert_allclose(out.sequences_scores, ref.sequences_scores.numpy(), atol=1e-5)
