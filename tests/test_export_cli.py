"""`python -m qtip_ops.export SRC DST` (qtip_ops/export.py): the direction read from SRC and DST, the .pt2 path
(one AOTInductor package for this module), the error paths (non-zero exit, one-line error, nothing left
behind), and the GGUF / reference-checkpoint paths (skipped while qtip_ops.formats lacks them)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qtip_ops  # noqa: F401  (registers the qtip ops)
from qtip_ops.export import main

pytest.importorskip("transformers")


def _converter(name):
    try:
        return importlib.import_module(f"qtip_ops.formats.{name}")
    except ImportError as err:
        pytest.skip(f"qtip_ops.formats.{name} is not importable yet ({err})")


def _tiny_quantized(path: Path) -> tuple[torch.nn.Module, Path]:
    """A 2-layer random Llama (vocab 256, hidden 64) quantized at K=2, L=8 and saved with save_quantized."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from qtip_ops.checkpoint import round_unquantized, save_quantized
    from qtip_ops.quantize import CodeConfig, quantize_model

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    quantize_model(model, ids, CodeConfig(K=2, L=8), progress=False)
    round_unquantized(model, torch.float16)
    return model, save_quantized(model, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_quantized(tmp_path_factory.mktemp("cli") / "tiny-qtip")


def _cli(capsys, *args):
    """Runs the CLI in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m qtip_ops.export: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------- help


def test_help_documents_every_conversion_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("reference QTIP checkpoint", "quip_params", "--from reference", ".gguf", ".pt2",
                     "AOTInductor", "--seq-len", "--static", "examples:",
                     "python -m qtip_ops.export smollm2-qtip/ smollm2-qtip.gguf",
                     "python -m qtip_ops.export smollm2-qtip.gguf smollm2-qtip/",
                     "python -m qtip_ops.export smollm2-qtip/ smollm2.pt2",
                     "python -m qtip_ops.export ref-llama-2bit/ llama-qtip/"):
        assert fragment in text, fragment


# --------------------------------------------------------------------------------------------- .pt2 path


@pytest.mark.slow  # one AOTInductor build (~20-60 s on 2 cores)
def test_quantized_dir_to_pt2_runs_and_matches_eager(tiny, tmp_path, capsys):
    from qtip_ops.aoti import check_input_ids, load_package

    model, qdir = tiny
    dst = tmp_path / "out" / "tiny.pt2"
    code, out, err = _cli(capsys, qdir, dst, "--seq-len", 12)
    assert code == 0, err
    assert out.startswith(f"wrote {dst} (") and dst.is_file()
    assert [p.name for p in dst.parent.iterdir()] == ["tiny.pt2"]  # no temporary left behind
    runner = load_package(dst)
    meta = runner.get_metadata()
    assert meta["qtip.seq_len"] == "12" and meta["qtip.batch"] == "dynamic"
    with pytest.raises(ValueError, match="exported for sequences of 12 tokens, got 5"):
        check_input_ids(meta, torch.zeros(1, 5, dtype=torch.int64))
    for batch in (1, 3):
        ids = torch.randint(0, 256, (batch, 12), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            torch.testing.assert_close(runner(ids), model(ids).logits, rtol=1e-4, atol=1e-4)


def test_pt2_failure_leaves_nothing(tiny, tmp_path, capsys):
    _, qdir = tiny
    code, _, err = _cli(capsys, qdir, tmp_path / "x.pt2", "--seq-len", 1000)
    _assert_one_line_error(code, err, "seq_len must be in [1, 128]")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- error paths


def test_missing_source(tmp_path, capsys):
    _assert_one_line_error(*_cli(capsys, tmp_path / "nope", tmp_path / "x.pt2")[::2], "does not exist")


def test_pt2_source_is_refused(tmp_path, capsys):
    (tmp_path / "m.pt2").write_bytes(b"PK")
    _assert_one_line_error(*_cli(capsys, tmp_path / "m.pt2", tmp_path / "out")[::2], "cannot be converted back")


def test_other_files_and_dirs_are_refused(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"")
    _assert_one_line_error(*_cli(capsys, tmp_path / "weights.bin", tmp_path / "o.pt2")[::2], "not a .gguf")
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(*_cli(capsys, tmp_path / "empty", tmp_path / "o.pt2")[::2], "no config.json")
    (tmp_path / "float").mkdir()
    (tmp_path / "float" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _assert_one_line_error(*_cli(capsys, tmp_path / "float", tmp_path / "o.pt2")[::2], "quantize it first")


def test_conversions_that_convert_nothing_are_refused(tiny, tmp_path, capsys):
    _, qdir = tiny
    _assert_one_line_error(*_cli(capsys, qdir, tmp_path / "copy")[::2], "nothing to convert")
    _assert_one_line_error(*_cli(capsys, qdir, qdir)[::2], "same path")
    _assert_one_line_error(*_cli(capsys, qdir, tmp_path / "a.gguf", "--seq-len", 8)[::2], ".pt2 outputs only")
    _assert_one_line_error(*_cli(capsys, qdir, tmp_path / "a.pt2", "--seq-len", 0)[::2], "--seq-len must be >= 1")
    _assert_one_line_error(*_cli(capsys, qdir, tmp_path / "a.pt2", "--from", "gguf")[::2], "needs a .gguf file")
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    _assert_one_line_error(*_cli(capsys, tmp_path / "a.gguf", tmp_path / "b.gguf")[::2], "already a .gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf"]


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["only-one"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["a", "b", "--from", "onnx"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_module_entry_point_exit_status_and_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "qtip_ops.export", str(tmp_path / "nope"), str(tmp_path / "x.gguf")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"python -m qtip_ops.export: error: {tmp_path / 'nope'} does not exist"]


# ------------------------------------------------------------------------ GGUF and reference conversions


def test_dir_to_gguf_and_back(tiny, tmp_path, capsys):
    _converter("gguf")
    from qtip_ops.checkpoint import load_quantized

    model, qdir = tiny
    code, out, err = _cli(capsys, qdir, tmp_path / "tiny.gguf")
    assert code == 0 and (tmp_path / "tiny.gguf").is_file(), err
    code, out, err = _cli(capsys, tmp_path / "tiny.gguf", tmp_path / "back")
    assert code == 0, err
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads((qdir / "config.json").read_text())
    loaded, _ = load_quantized(tmp_path / "back")
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    # --from gguf names the same thing explicitly
    code, _, err = _cli(capsys, tmp_path / "tiny.gguf", tmp_path / "back2", "--from", "gguf", "-q")
    assert code == 0 and (tmp_path / "back2" / "model.safetensors").is_file(), err


def test_corrupt_gguf_is_a_one_line_error(tmp_path, capsys):
    _converter("gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    _assert_one_line_error(*_cli(capsys, tmp_path / "bad.gguf", tmp_path / "out")[::2], "bad.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def _reference_checkpoint(path: Path):
    _converter("reference")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from reference_fixtures import build_reference_checkpoint
    except ImportError as err:
        pytest.skip(f"tests/reference_fixtures.py is not importable yet ({err})")
    finally:
        sys.path.pop(0)
    return build_reference_checkpoint(path)


def test_reference_dir_detected_and_forced(tmp_path, capsys):
    from qtip_ops.checkpoint import load_quantized
    from qtip_ops.models import is_quantized_dir

    _reference_checkpoint(tmp_path / "ref")
    code, out, err = _cli(capsys, tmp_path / "ref", tmp_path / "ours")  # detected from quip_params
    assert code == 0, err
    assert is_quantized_dir(tmp_path / "ours")
    model, _ = load_quantized(tmp_path / "ours")
    assert sum(type(m).__name__ == "QTIPLinear" for m in model.modules()) == 14
    code, _, err = _cli(capsys, tmp_path / "ref", tmp_path / "ours2", "--from", "reference", "-q")
    assert code == 0 and is_quantized_dir(tmp_path / "ours2"), err
    # --from reference on a directory that is not one fails with the converter's one-line error
    code, _, err = _cli(capsys, tmp_path / "ours", tmp_path / "x", "--from", "reference")
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_reference_dir_to_gguf(tmp_path, capsys):
    _converter("gguf")
    _reference_checkpoint(tmp_path / "ref")
    code, out, err = _cli(capsys, tmp_path / "ref", tmp_path / "ref.gguf")
    assert code == 0 and (tmp_path / "ref.gguf").is_file(), err
