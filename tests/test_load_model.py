"""load_model(): checkpoints of both tokenizer families, PEFT adapters, fingerprints."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from pytest_ftmodel import ModelLoadError, ModelPathError, load_model
from pytest_ftmodel import model as model_mod


def test_checkpoint_loads_in_eval_mode_with_its_tokenizer(demo_pair) -> None:
    m = load_model(demo_pair.finetuned, device="cpu")
    assert not m.model.training
    assert m.device == "cpu" and m.dtype == "float32" and m.kind == "checkpoint"
    assert m.path == demo_pair.finetuned
    assert m.tokenizer.pad_token_id is not None
    assert m.context_length == m.model.config.max_position_embeddings if hasattr(m.model.config, "max_position_embeddings") else m.model.config.n_positions


def test_tokenizer_without_pad_gets_eos_in_memory_only(bpe_pair, tmp_path) -> None:
    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    m = load_model(ckpt, device="cpu")
    assert m.tokenizer.pad_token == m.tokenizer.eos_token == "</s>"
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # the user's files are untouched
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert config.get("pad_token") is None


def test_byte_family_has_no_bos_and_llama_family_adds_one(byte_model, bpe_model) -> None:
    assert byte_model.tokenizer.bos_token_id is None
    ids = bpe_model.tokenizer("hello").input_ids
    assert ids[0] == bpe_model.tokenizer.bos_token_id and ids.count(ids[0]) == 1
    assert bpe_model.tokenizer.chat_template and not byte_model.tokenizer.chat_template


def test_dtype_option_is_applied(bpe_pair) -> None:
    torch = pytest.importorskip("torch")
    m = load_model(bpe_pair.finetuned, device="cpu", dtype="bfloat16")
    assert m.dtype == "bfloat16"
    assert {p.dtype for p in m.model.parameters()} == {torch.bfloat16}


def test_bad_arguments_raise_one_line_errors(tmp_path, bpe_pair) -> None:
    with pytest.raises(ModelPathError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelPathError, match="holds no model: looked for config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelPathError, match="unknown model device 'gpu'"):
        load_model(bpe_pair.finetuned, device="gpu")
    with pytest.raises(ModelPathError, match="unknown model dtype 'half'"):
        load_model(bpe_pair.finetuned, dtype="half")


def test_load_errors_chain_the_original_exception(tmp_path, bpe_pair) -> None:
    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError) as info:
        load_model(ckpt, device="cpu")
    assert "\n" not in str(info.value) and "model.safetensors" in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"model_type": "llama", "vocab_size": ', r"config '.*config.json' is not readable JSON \(JSONDecodeError: .*\): restore it"),
        ("", r"config '.*config.json' is not readable JSON"),
        ('{"model_type": "no-such-architecture"}', r"config '.*config.json' failed to load: .*no-such-architecture"),
    ],
)
def test_a_corrupt_config_is_named_not_blamed_on_the_tokenizer(tmp_path, bpe_pair, content, message) -> None:
    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    (ckpt / "config.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(ckpt, device="cpu")
    assert "tokenizer" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is not None


# ---- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_changes_with_weights_tokenizer_or_config(bpe_pair, tmp_path) -> None:
    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    first = model_mod.fingerprint(ckpt)
    assert model_mod.fingerprint(ckpt) == first
    # training-only files do not change what the model computes
    (ckpt / "optimizer.pt").write_bytes(b"state")
    (ckpt / "trainer_state.json").write_text("{}")
    assert model_mod.fingerprint(ckpt) == first
    seen = {first}
    for name, change in [
        ("model.safetensors", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
        ("tokenizer.json", lambda b: b.replace(b'"<unk>"', b'"<UNK>"', 1)),
        ("config.json", lambda b: b.replace(b"{", b'{"extra": 1,', 1)),
    ]:
        path = ckpt / name
        path.write_bytes(change(path.read_bytes()))
        new = model_mod.fingerprint(ckpt)
        assert new not in seen, name
        seen.add(new)


def test_fingerprint_does_not_reread_unchanged_files(bpe_pair, tmp_path, monkeypatch) -> None:
    ckpt = shutil.copytree(bpe_pair.finetuned, tmp_path / "ckpt")
    calls: list[str] = []
    from pytest_ftmodel.engines import common

    real = common.file_sha256
    monkeypatch.setattr(common, "file_sha256", lambda p: calls.append(p.name) or real(p))
    first = model_mod.fingerprint(ckpt)
    assert "model.safetensors" in calls
    calls.clear()
    assert model_mod.fingerprint(ckpt) == first
    assert calls == []  # remembered by size and mtime
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_mod.fingerprint(ckpt) != first
    assert calls == ["model.safetensors"]


def test_loaded_models_report_the_fingerprint(bpe_pair) -> None:
    assert load_model(bpe_pair.finetuned, device="cpu").fingerprint == model_mod.fingerprint(bpe_pair.finetuned)
    assert model_mod.fingerprint(bpe_pair.base) != model_mod.fingerprint(bpe_pair.finetuned)


# ---- PEFT adapters ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(bpe_pair, tmp_path_factory):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(bpe_pair.base))
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = peft.get_peft_model(base, cfg)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    wrapped.save_pretrained(str(out))
    merged = wrapped.merge_and_unload().eval()
    return out, merged


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_loads_on_its_local_base(adapter, bpe_pair) -> None:
    torch = pytest.importorskip("torch")
    path, merged = adapter
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(bpe_pair.base)
    m = load_model(path, device="cpu")
    assert m.kind == "adapter" and m.base_path == bpe_pair.base
    ids = torch.tensor([m.tokenizer("The cat chased the ball.").input_ids])
    assert torch.allclose(_logits(m.model, ids), _logits(merged, ids), atol=1e-4)
    base_only = load_model(bpe_pair.base, device="cpu")
    assert not torch.allclose(_logits(base_only.model, ids), _logits(m.model, ids), atol=1e-3)
    assert m.fingerprint != base_only.fingerprint


def test_adapter_with_a_hub_base_needs_base_model(adapter, bpe_pair, tmp_path) -> None:
    path = shutil.copytree(adapter[0], tmp_path / "lora")
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "some-org/some-model-7b"
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="'some-org/some-model-7b', which is not a local directory: pass --base-model PATH"):
        load_model(path, device="cpu")
    m = load_model(path, device="cpu", base=bpe_pair.base)
    assert m.base_path == bpe_pair.base


def test_adapter_fingerprint_covers_the_base(adapter, bpe_pair, tmp_path) -> None:
    path = shutil.copytree(adapter[0], tmp_path / "lora")
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "hub/name"
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    on_base = load_model(path, device="cpu", base=bpe_pair.base).fingerprint
    on_tuned = load_model(path, device="cpu", base=bpe_pair.finetuned).fingerprint
    assert on_base != on_tuned


def test_missing_peft_names_the_extra(adapter, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(ModelLoadError, match=r'pip install "pytest-ftmodel\[peft\]"'):
        load_model(adapter[0], device="cpu")
