"""What README's "Guarantees" promise about saving, each reproduced as issue 17 found it.

A save that fails (a full disk: RLIMIT_FSIZE reproduces it) leaves the old model intact;
a save killed while its files are swapped in is refused at load with a clear error; no
temporary file survives the next save.  Failures run in a subprocess, so the limit and
the kill never touch the test process.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb
from minibertgen.checkpoint.saving import SAVE_MARKER, IncompleteSaveError

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(__file__).parent / "fixtures" / "generation" / "toy_bert2bert"
SMALL = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=32, is_decoder=True)
IDS = np.array([[2, 5, 7, 9, 11]])

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                                reason="RLIMIT_FSIZE and kill semantics are POSIX")


def decoder(seed, **overrides):
    return mb.BertGenerationDecoder(mb.BertGenerationConfig(**{**SMALL, **overrides}), seed=seed)


def logits(directory, cls=mb.BertGenerationDecoder):
    return cls.from_pretrained(directory)(input_ids=IDS).logits


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (with minibertgen importable); return the result."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


def leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp") or p.name == SAVE_MARKER)


SAVE_B_UNDER_LIMIT = """
    import resource, signal, sys
    import minibertgen as mb
    model = {build}
    signal.signal(signal.SIGXFSZ, {handler})
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
    try:
        model.save_pretrained({directory!r})
    except OSError as exc:
        print("save failed:", exc.errno)
"""


def test_a_full_disk_leaves_the_old_model_intact(tmp_path):
    old = decoder(seed=0)
    old.save_pretrained(tmp_path)
    expected = logits(tmp_path)
    build = f"mb.BertGenerationDecoder(mb.BertGenerationConfig(**{dict(SMALL, bos_token_id=3)!r}), seed=1)"
    result = run_python(SAVE_B_UNDER_LIMIT.format(build=build, handler="signal.SIG_IGN", limit=4096,
                                                  directory=str(tmp_path)))
    assert "save failed: 27" in result.stdout, result.stderr  # EFBIG: the weights did not fit
    np.testing.assert_array_equal(logits(tmp_path), expected)  # not a mix: the old model, exactly
    assert mb.BertGenerationConfig.from_pretrained(tmp_path).bos_token_id == old.config.bos_token_id
    assert leftovers(tmp_path) == []


def test_a_save_killed_while_writing_leaves_the_old_model_and_the_next_save_cleans_up(tmp_path):
    decoder(seed=0).save_pretrained(tmp_path)
    expected = logits(tmp_path)
    build = "mb.BertGenerationDecoder(mb.BertGenerationConfig(**%r), seed=1)" % SMALL
    # SIGXFSZ left at its default kills the process in the middle of writing the weights.
    result = run_python(SAVE_B_UNDER_LIMIT.format(build=build, handler="signal.SIG_DFL", limit=4096,
                                                  directory=str(tmp_path)))
    assert result.returncode == -signal.SIGXFSZ, result.stderr
    assert any(name.endswith(".tmp") for name in leftovers(tmp_path))  # what issue 17 found...
    np.testing.assert_array_equal(logits(tmp_path), expected)  # ...but the old model is intact
    new = decoder(seed=2)
    new.save_pretrained(tmp_path)
    assert leftovers(tmp_path) == []  # the dead process's temporary file is gone
    np.testing.assert_array_equal(logits(tmp_path), new(input_ids=IDS).logits)


KILLED_DURING_SWAP = """
    import os
    import minibertgen as mb
    from minibertgen.checkpoint import saving
    real = os.replace
    def replace(source, target):
        real(source, target)
        if str(target).endswith("model.safetensors"):
            os._exit(9)  # as a kill -9 right after the weights were swapped in
    saving.os.replace = replace
    model = mb.BertGenerationDecoder(mb.BertGenerationConfig(**%r), seed=1)
    model.save_pretrained(%r)
"""


def test_a_save_killed_while_swapping_files_in_is_refused_at_load(tmp_path):
    decoder(seed=0, bos_token_id=3).save_pretrained(tmp_path)
    result = run_python(KILLED_DURING_SWAP % (SMALL, str(tmp_path)))
    assert result.returncode == 9, result.stderr
    # New weights under the old config: minibertgen says so instead of loading a mix.
    with pytest.raises(IncompleteSaveError, match="did not finish"):
        mb.BertGenerationDecoder.from_pretrained(tmp_path)
    with pytest.raises(IncompleteSaveError, match="config.json"):
        mb.BertGenerationConfig.from_pretrained(tmp_path)
    fresh = decoder(seed=4)
    fresh.save_pretrained(tmp_path)  # saving again repairs the directory
    assert leftovers(tmp_path) == []
    np.testing.assert_array_equal(logits(tmp_path), fresh(input_ids=IDS).logits)


def test_a_failing_4bit_save_keeps_the_float32_model(tmp_path):
    pytest.importorskip("minibertgen.quantization")
    old = mb.EncoderDecoderModel.from_pretrained(TOY)
    old.save_pretrained(tmp_path)
    before = old(input_ids=IDS, decoder_input_ids=IDS).logits
    build = (f"mb.EncoderDecoderModel.from_pretrained({str(TOY)!r}, quantization_config="
             "mb.BitsAndBytesConfig(load_in_4bit=True))")
    config_size = (tmp_path / "config.json").stat().st_size
    result = run_python(SAVE_B_UNDER_LIMIT.format(build=build, handler="signal.SIG_IGN",
                                                  limit=config_size + 1024, directory=str(tmp_path)))
    assert "save failed: 27" in result.stdout, result.stderr
    again = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    assert getattr(again.config, "quantization_config", None) is None  # no config claiming 4-bit
    np.testing.assert_array_equal(again(input_ids=IDS, decoder_input_ids=IDS).logits, before)
    assert leftovers(tmp_path) == []


def test_saving_never_writes_through_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "model"
    out.mkdir()
    for name in ("config.json.tmp", "config.tmp", "generation_config.tmp", "model.safetensors.tmp"):
        (out / name).symlink_to(victim)
    decoder(seed=0).save_pretrained(out)
    mb.BertGenerationConfig(**SMALL).to_json_file(out / "other.json")
    assert victim.read_text() == "keep me"
    assert not (out / "config.json").is_symlink()


def test_a_failed_write_of_one_file_removes_every_temporary(tmp_path, monkeypatch):
    from minibertgen.checkpoint import saving

    def broken(handle):
        handle.write(b"{")
        raise OSError(28, "No space left on device")

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OSError, match="No space"):
        saving.save_model_files(tmp_path, {"model.safetensors": saving.text_writer("x"), "config.json": broken})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "{}"


def test_config_and_generation_config_saves_never_follow_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("config.json.tmp", "generation_config.tmp"):
        (tmp_path / name).symlink_to(victim)
    mb.BertGenerationConfig(**SMALL).save_pretrained(tmp_path)
    mb.GenerationConfig(max_new_tokens=3).save_pretrained(tmp_path)
    assert victim.read_text() == "keep me"
    assert mb.GenerationConfig.from_pretrained(tmp_path).max_new_tokens == 3
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == [
        "config.json", "generation_config.json", "victim.txt"]


@pytest.mark.parametrize("content, message", [(b'{"max_length": "\xff"}', "not valid UTF-8 JSON"),
                                              (b"[" * 3000 + b"]" * 3000, "nested too deeply")])
def test_a_bad_generation_config_json_names_the_file(tmp_path, content, message):
    (tmp_path / "generation_config.json").write_bytes(content)
    with pytest.raises(ValueError, match=f"generation_config.json: {message}"):
        mb.GenerationConfig.from_pretrained(tmp_path)
