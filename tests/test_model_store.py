"""Model store: bf16 GGUF import checked against transformers' own GGUF loader, HF folders imported
by reference, the disk-space check, `models list/remove`, and the facts the list shows."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from backends import cli, models
from backends.errors import UserInputError
from backends.model_store_info import list_models, stored_precision


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """A 2-layer Llama GGUF (Q8_0 matrices) with SmolLM2's tokenizer and chat template."""
    from tests.tiny_gguf import make_tiny_gguf

    return make_tiny_gguf(
        tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf", models.default_gguf_path()
    )


@pytest.mark.slow
def test_gguf_imports_as_bf16_equal_to_transformers_loader(tiny_gguf, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    out = models.import_model(tiny_gguf, progress=models.print_progress)
    assert out.name == "tiny-llama"
    assert "Converting tensors to bf16: 100%" in capsys.readouterr().err
    assert stored_precision(out) == "bf16"
    row = {m["name"]: m for m in list_models()}["tiny-llama"]
    assert row["architecture"] == "LlamaForCausalLM" and row["precision"] == "bf16"
    assert row["context_length"] == 2048 and row["chat_template"] is True
    # 2 bytes per parameter plus a small header
    weights = (out / "model.safetensors").stat().st_size
    assert 2 * row["params"] <= weights < 2 * row["params"] + 100_000
    assert not (out / "model.safetensors.data").exists()  # the side file is gone

    ours = AutoModelForCausalLM.from_pretrained(out).state_dict()
    theirs = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.bfloat16
    ).state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == torch.bfloat16 and torch.equal(ours[key], value), key


@pytest.mark.slow
def test_gguf_import_fp32_by_choice(tiny_gguf):
    out = models.import_model(tiny_gguf, "tiny-fp32", dtype="fp32")
    assert stored_precision(out) == "fp32"
    params = {m["name"]: m for m in list_models()}["tiny-fp32"]["params"]
    assert 4 * params <= (out / "model.safetensors").stat().st_size < 4 * params + 100_000
    with pytest.raises(UserInputError, match="precision"):
        models.import_model(tiny_gguf, "tiny-x", dtype="int3")


def test_hf_folder_is_hard_linked_and_remove_frees_nothing(tiny_model_dir, capsys):
    out = models.import_model(tiny_model_dir, "linked")
    imported, original = out / "model.safetensors", tiny_model_dir / "model.safetensors"
    assert os.path.samefile(imported, original) and original.stat().st_nlink >= 2
    meta = json.loads((out / models.STORE_META).read_text())
    assert meta["placed"] == "hardlink"
    row = {m["name"]: m for m in list_models()}["linked"]
    assert row["own_size"] < 10_000_000 < row["size"]  # only the tokenizer files are the store's own
    assert cli.main(["models", "remove", "linked", "--yes"]) == 0
    said = capsys.readouterr().out
    assert f"{row['own_size']:,} bytes freed" in said
    assert not out.exists() and original.is_file()  # the source is untouched


def test_hf_folder_symlinked_across_file_systems_or_copied_when_asked(tiny_model_dir, monkeypatch):
    copied = models.import_model(tiny_model_dir, "copied", copy=True)
    assert not os.path.samefile(copied / "model.safetensors", tiny_model_dir / "model.safetensors")

    def no_hard_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(models.os, "link", no_hard_links)
    out = models.import_model(tiny_model_dir, "symlinked")
    assert (out / "model.safetensors").is_symlink()
    listed = {m["name"]: m for m in list_models()}
    assert listed["symlinked"]["placed"] == "symlink" and listed["copied"]["placed"] == "copy"
    assert listed["copied"]["own_size"] > listed["copied"]["params"] * 4 > listed["symlinked"]["own_size"]


def test_disk_space_check_names_the_bytes_needed(tiny_model_dir, monkeypatch):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(UserInputError) as info:
        models.import_model(tiny_model_dir, "nospace", copy=True)
    size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert f"{size:,} bytes needed, 1,000 free" in str(info.value)
    assert not (models.paths.models_dir() / "nospace").exists()


def test_remove_asks_and_refuses_a_model_a_run_uses(tiny_model_dir, monkeypatch, capsys):
    import io

    from backends.config import RunConfig
    from backends.runs import RunDir

    out = models.import_model(tiny_model_dir, "busy", copy=True)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli.main(["models", "remove", "busy"]) == 1
    assert "frees" in capsys.readouterr().err and out.is_dir()

    run = RunDir.create(RunConfig(model="busy"))
    run.acquire_lock()  # this test process "runs" it
    assert cli.main(["models", "remove", "busy", "--yes"]) == 1
    assert "in use by the running run" in capsys.readouterr().err and out.is_dir()
    run.release_lock()
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert cli.main(["models", "remove", "busy"]) == 0 and not out.exists()
    assert cli.main(["models", "remove", "busy", "--yes"]) == 1  # no such model now


def test_models_list_json_and_table(tiny_model_dir, capsys):
    models.import_model(tiny_model_dir, "tiny", copy=True)
    assert cli.main(["models", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["architecture"] == "LlamaForCausalLM" and row["precision"] == "fp32"
    assert row["context_length"] == 2048 and row["chat_template"] is True
    assert cli.main(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["NAME", "ARCHITECTURE", "PARAMS", "PREC"]
    assert table[1].split()[:2] == ["tiny", "LlamaForCausalLM"] and "fp32" in table[1]
