"""Models larger than one device: --model-max-memory, the device map built from it, inputs on the first device.

No GPU here: the map is planned for GPU budgets (planning reads sizes only, on an empty model), loading
is checked with a map over the CPU (and over CPU and disk, where accelerate's hooks move every
module's inputs as they do between GPUs), and the numbers must equal the unsplit model's.
"""

from __future__ import annotations

import logging

import pytest

from pytest_ftmodel import ModelLoadError, ModelPathError, generate, load_model, perplexity
from pytest_ftmodel.model import FTModel, check_placement, input_device, parse_max_memory, plan_device_map, resolve_placement

torch = pytest.importorskip("torch")
accelerate = pytest.importorskip("accelerate")

TEXTS = ["The small cat chased the ball in the garden.", "Summarize: The old fox found the hat.\nThe fox found the hat."]


@pytest.fixture(autouse=True)
def _no_gpu_warnings(caplog):
    # planning for GPU budgets on a machine without GPUs: accelerate warns that they are absent
    caplog.set_level(logging.ERROR, logger="accelerate")


def test_max_memory_is_parsed_with_units() -> None:
    assert parse_max_memory("0=20GiB, 1=20GiB ,cpu=64GiB") == {0: 20 << 30, 1: 20 << 30, "cpu": 64 << 30}
    assert parse_max_memory("0=1.5GB,CPU=512MiB,mps=100") == {0: 1_500_000_000, "cpu": 512 << 20, "mps": 100}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0:20GiB", "'0:20GiB' is not DEVICE=SIZE"),
        ("gpu0=20GiB", "'gpu0=20GiB' names no device"),
        ("0=20GiB,0=10GiB", "repeats device '0'"),
        ("0=20 gigs", "'0=20 gigs' has no readable size"),
        ("cpu=", "'cpu=' is not DEVICE=SIZE"),
    ],
)
def test_bad_max_memory_is_one_line_naming_the_piece(value: str, message: str) -> None:
    with pytest.raises(ModelPathError, match=message) as info:
        parse_max_memory(value)
    assert "\n" not in str(info.value) and "0=20GiB,1=20GiB,cpu=64GiB" in str(info.value)


def test_budgets_go_with_auto_only() -> None:
    assert check_placement("auto", "cpu=1GiB") == {"cpu": 1 << 30}
    assert check_placement("cuda:1", None) is None
    with pytest.raises(ModelPathError, match="use --model-device auto with --model-max-memory"):
        check_placement("cuda:0", "0=1GiB")


def test_auto_keeps_one_device_unless_spreading_is_asked_for_or_several_gpus_are_visible() -> None:
    if torch.cuda.device_count() > 1:
        pytest.skip("several GPUs are visible: auto spreads here")
    single = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_placement("auto") == (single, None)
    assert resolve_placement("auto", "cpu=2GiB") == ("auto", {"cpu": 2 << 30})
    assert resolve_placement("cpu") == ("cpu", None)


def _module_bytes(model) -> dict[str, int]:
    from accelerate.utils import compute_module_sizes

    return dict(compute_module_sizes(model))


@pytest.mark.parametrize("budget_kb", [400, 500])
def test_the_planned_map_spreads_over_the_budgets_and_respects_them(byte_pair, byte_model, budget_kb) -> None:
    budgets = {0: budget_kb * 1000, 1: budget_kb * 1000, "cpu": 10**9}
    device_map = plan_device_map(byte_pair.finetuned, torch.float32, budgets)
    sizes = _module_bytes(byte_model.model)
    used: dict[object, int] = {}
    for name, where in device_map.items():
        used[where] = used.get(where, 0) + sizes.get(name, 0)  # a tied head has no weights of its own
    # every weight is placed exactly once, on a device with a budget, within that budget
    assert sum(used.values()) == sizes[""]
    assert set(used) <= set(budgets) and all(used[d] <= budgets[d] for d in used), (device_map, used)
    # the input embeddings (and the head tied to them) start the pipeline on the first GPU, and both GPUs are used
    assert device_map["transformer.wte"] == device_map["lm_head"] == 0
    assert {0, 1} <= set(used)
    layers = [device_map.get(f"transformer.h.{i}", device_map.get("transformer.h")) for i in range(2)]
    order = [0, 1, "cpu"]
    assert [order.index(d) for d in layers] == sorted(order.index(d) for d in layers)  # in device order


def test_gpu_budgets_large_enough_keep_the_model_off_the_cpu(bpe_pair) -> None:
    device_map = plan_device_map(bpe_pair.finetuned, torch.float32, {0: 2 << 20, 1: 2 << 20, "cpu": 1 << 30})
    assert "cpu" not in device_map.values() and device_map["model.embed_tokens"] == 0


def test_a_model_that_does_not_fit_is_one_line(bpe_pair) -> None:
    with pytest.raises(ModelLoadError, match=r"does not fit in cpu=97.66KiB: the whole model would go to disk") as info:
        plan_device_map(bpe_pair.finetuned, torch.float32, {"cpu": 100_000})
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="does not fit in cpu=97.66KiB"):
        load_model(bpe_pair.finetuned, max_memory="cpu=100000")


def test_auto_with_budgets_loads_through_the_map_and_scores_as_the_unsplit_model(demo_pair) -> None:
    whole = load_model(demo_pair.finetuned, device="cpu")
    spread = load_model(demo_pair.finetuned, device="auto", max_memory="cpu=1GiB")
    assert spread.device_map is not None and set(spread.device_map.values()) == {"cpu"}
    assert spread.device == "cpu" and spread.dtype == "float32" and whole.device_map is None
    assert spread.fingerprint == whole.fingerprint
    assert perplexity(spread, TEXTS).nll == perplexity(whole, TEXTS).nll
    prompt = ["Summarize: The happy dog ate the cake."]
    answers = generate(spread, prompt, max_new_tokens=12, cache=None)  # no cache: the two share a fingerprint
    assert answers == generate(whole, prompt, max_new_tokens=12, cache=None) and answers[0].strip()


def _split(path, tmp_path, device_map) -> FTModel:
    """The checkpoint loaded with an explicit multi-entry map: modules on "disk" are kept there and moved
    in by accelerate's hooks at each forward, the same hooks that move activations between GPUs."""
    from transformers import AutoModelForCausalLM

    from pytest_ftmodel.model import _load_tokenizer, fingerprint

    model = AutoModelForCausalLM.from_pretrained(str(path), device_map=device_map, offload_folder=str(tmp_path), dtype=torch.float32)
    model.eval()
    return FTModel(
        model=model, tokenizer=_load_tokenizer(path), path=path, device=input_device(model), dtype="float32",
        fingerprint=fingerprint(path), device_map=dict(model.hf_device_map),
    )


def test_a_model_split_over_devices_gives_the_unsplit_figures(bpe_pair, tmp_path) -> None:
    whole = load_model(bpe_pair.finetuned, device="cpu")
    device_map = {"model.embed_tokens": "cpu", "lm_head": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu"}
    split = _split(bpe_pair.finetuned, tmp_path, device_map)
    assert split.model.hf_device_map["model.layers.1"] == "disk"
    assert split.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # really not resident
    assert split.device == "cpu"
    ours, theirs = perplexity(split, TEXTS), perplexity(whole, TEXTS)
    assert ours.n_tokens == theirs.n_tokens and ours.nll == pytest.approx(theirs.nll, rel=1e-6, abs=1e-6)
    prompts = ["Summarize: The quick owl moved the box in the park. It was a cold day.", "Classify: The film was great."]
    answers = generate(split, prompts, max_new_tokens=16, cache=None)
    assert answers == generate(whole, prompts, max_new_tokens=16, cache=None) and all(a.strip() for a in answers)


def test_inputs_go_to_the_device_of_the_input_embeddings(bpe_pair) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(bpe_pair.finetuned), dtype=torch.float32)
    model.model.layers.to("meta")
    assert input_device(model) == "cpu"
    model.model.layers.to_empty(device="cpu")
    model.model.embed_tokens.to("meta")
    assert input_device(model) == "meta"


# ---- the option and its ini twin ---------------------------------------------------------------

PASSING = "def test_ok():\n    pass\n"


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--model-max-memory", "0=20XB"], "", "*--model-max-memory: model max memory '0=20XB': '0=20XB' has no readable size*"),
        ([], "ftmodel_max_memory = gpu=1GiB", "ERROR: model max memory 'gpu=1GiB': 'gpu=1GiB' names no device*"),
        (["--model-device", "cpu", "--model-max-memory", "cpu=1GiB"], "", "ERROR: *spreads a model over devices, and model device 'cpu' names one: use --model-device auto*"),
    ],
)
def test_bad_budgets_stop_the_run_with_one_line(pytester: pytest.Pytester, args, ini, message) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_budgets_from_the_ini_spread_the_fixture_model(pytester: pytest.Pytester, bpe_pair) -> None:
    pytester.makeini(f"[pytest]\nftmodel_model = {bpe_pair.finetuned}\nftmodel_max_memory = cpu=1GiB\n")
    pytester.makepyfile(
        """
        def test_spread(ftmodel):
            assert ftmodel.device_map is not None and set(ftmodel.device_map.values()) == {"cpu"}
            assert ftmodel.device == "cpu"
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)
