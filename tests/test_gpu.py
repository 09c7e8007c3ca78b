"""The CuPy backend against the NumPy one (runs only where CuPy sees a GPU; CI has none).

Parity targets (issue: GPU inference without torch): float32 logits within 1e-4 of the
CPU path, float16 within 2e-2, greedy and beam ids identical in float32.
"""
import numpy as np
import pytest

import minibertgen as mb
from conftest import FIXTURES


def _gpu_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, or no device: all mean "skip"
        return False


pytestmark = pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and an NVIDIA GPU")
REF = FIXTURES / "reference"


@pytest.mark.parametrize("case", ["bert2bert", "relative_key_query", "projection", "shared"])
def test_encoder_decoder_logits_match_cpu(case):
    import cupy

    data = np.load(REF / case / "io.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in.")}
    cpu = mb.EncoderDecoderModel.from_pretrained(REF / case)(**inputs)
    gpu_model = mb.EncoderDecoderModel.from_pretrained(REF / case, device=0)
    gpu = gpu_model(**inputs)
    assert isinstance(gpu.logits, cupy.ndarray)
    assert float(np.abs(cupy.asnumpy(gpu.logits) - cpu.logits).max()) <= 1e-4
    assert abs(float(gpu.loss) - float(cpu.loss)) <= 1e-4
    half = mb.EncoderDecoderModel.from_pretrained(REF / case, device=0, dtype="float16")(**inputs)
    assert float(np.abs(cupy.asnumpy(half.logits).astype(np.float32) - cpu.logits).max()) <= 2e-2


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_ids_match_cpu(beams):
    directory = FIXTURES / "generation" / "toy_bert2bert"
    cpu = mb.EncoderDecoderModel.from_pretrained(directory)
    gpu = mb.EncoderDecoderModel.from_pretrained(directory, device=0)
    source = np.array([[5, 6, 7, 8, 9, 10]])
    want = np.asarray(cpu.generate(source, num_beams=beams, max_new_tokens=12))
    got = gpu.generate(source, num_beams=beams, max_new_tokens=12)
    np.testing.assert_array_equal(np.asarray(got.get() if hasattr(got, "get") else got), want)
