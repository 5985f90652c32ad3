"""A checkpoint saved without its tokenizer stops the run at start-up with one line (exit 4) that says
how to save the tokenizer or point at it (``--tokenizer``), instead of failing every test on
transformers' guess ("install sentencepiece or tiktoken"); ``--tokenizer`` then loads it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ftmodel import load_model
from pytest_ftmodel.errors import ModelPathError
from pytest_ftmodel.model import identify

pytest_plugins = "pytester"

TEST_FILE = """
from pytest_ftmodel import perplexity

def test_scores(ftmodel):
    assert perplexity(ftmodel, ["The cat sat on the mat."], cache=None).n_tokens > 0
"""


@pytest.fixture(scope="module")
def bare_checkpoint(bpe_pair, tmp_path_factory) -> Path:
    """A tiny model saved as a Trainer saves it when no processing_class was given: weights and
    config, no tokenizer files."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    vocab = len(AutoTokenizer.from_pretrained(str(bpe_pair.finetuned)))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    out = tmp_path_factory.mktemp("run") / "final"
    args = TrainingArguments(output_dir=str(out.parent / "trainer"), report_to=[], use_cpu=True)
    Trainer(model=model, args=args).save_model(str(out))
    assert (out / "config.json").is_file() and not any(out.glob("tokenizer*"))
    return out


def _message(folder: Path, point: str) -> str:
    return (
        f"ERROR: no tokenizer files in {str(folder)!r}* (looked for tokenizer.json, *): save the tokenizer with the model "
        f"(pass processing_class=tokenizer to the Trainer before trainer.save_model(), or run "
        f"tokenizer.save_pretrained({str(folder)!r})), or point at a folder that has it with {point}"
    )


def test_a_checkpoint_without_tokenizer_stops_the_run_with_one_line(pytester: pytest.Pytester, bare_checkpoint) -> None:
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest(f"--model={bare_checkpoint}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([_message(bare_checkpoint, "--tokenizer PATH")])
    assert "sentencepiece" not in result.stdout.str() + result.stderr.str()


def test_tokenizer_option_gives_a_checkpoint_its_tokenizer(pytester: pytest.Pytester, bare_checkpoint, bpe_pair) -> None:
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest(f"--model={bare_checkpoint}", f"--tokenizer={bpe_pair.finetuned}", "--ftmodel-no-cache")
    result.assert_outcomes(passed=1)
    # a folder named by --tokenizer that holds none is named as such
    empty = pytester.mkdir("empty")
    bad = pytester.runpytest(f"--model={bare_checkpoint}", f"--tokenizer={empty}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines([_message(empty, "--tokenizer PATH")])


def test_the_base_model_is_checked_too(pytester: pytest.Pytester, bare_checkpoint, bpe_pair) -> None:
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest(f"--model={bpe_pair.finetuned}", f"--base-model={bare_checkpoint}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([_message(bare_checkpoint, "--base-tokenizer PATH")])


def test_in_python_the_same_line_and_the_tokenizer_keyword(bare_checkpoint, bpe_pair, tmp_path) -> None:
    with pytest.raises(ModelPathError, match=r"no tokenizer files in .*or point at a folder that has it with load_model\(\.\.\., tokenizer=PATH\)"):
        load_model(bare_checkpoint, device="cpu")
    m = load_model(bare_checkpoint, device="cpu", tokenizer=bpe_pair.finetuned)
    assert m.tokenizer("a").input_ids == load_model(bpe_pair.finetuned, device="cpu").tokenizer("a").input_ids
    # the tokenizer's files enter the fingerprint: another tokenizer is another model
    other = shutil.copytree(bpe_pair.finetuned, tmp_path / "tok", ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 7}))
    assert len({m.fingerprint, identify(bare_checkpoint, tokenizer=other)[0], identify(bare_checkpoint)[0]}) == 3
    assert m.fingerprint == identify(bare_checkpoint, tokenizer=bpe_pair.finetuned)[0]


@pytest.fixture(scope="module")
def adapter_without_tokenizer(bpe_pair, tmp_path_factory) -> Path:
    """A LoRA adapter as PEFT saves it: adapter files only, on a local base that has the tokenizer."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(bpe_pair.base))
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("adapter") / "lora"
    wrapped.save_pretrained(str(out))
    assert not any(out.glob("tokenizer*"))
    return out


def test_an_adapter_whose_base_has_the_tokenizer_is_fine(pytester: pytest.Pytester, adapter_without_tokenizer, bpe_pair, tmp_path) -> None:
    pytester.makepyfile(TEST_FILE)
    pytester.runpytest(f"--model={adapter_without_tokenizer}", "--ftmodel-no-cache").assert_outcomes(passed=1)
    # on a base that has none either, both folders are named
    bare_base = shutil.copytree(bpe_pair.base, tmp_path / "base", ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json"))
    adapter = shutil.copytree(adapter_without_tokenizer, tmp_path / "lora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(bare_base)}))
    result = pytester.runpytest(f"--model={adapter}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: no tokenizer files in {str(adapter)!r} nor in its base model {str(bare_base)!r} *--tokenizer PATH"])


def test_the_start_up_check_imports_neither_torch_nor_transformers(bare_checkpoint) -> None:
    code = (
        "import sys\n"
        "from pytest_ftmodel.model import check_model_path, check_tokenizer\n"
        f"path = {str(bare_checkpoint)!r}\n"
        "try:\n"
        "    check_tokenizer(path, kind=check_model_path(path))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ModelPathError", "[]"]
