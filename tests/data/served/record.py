"""Re-record the llama.cpp server responses kept in this folder (the tests never run this).

    pip install "llama-cpp-python[server]"        # builds llama.cpp from source (CPU)
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d /tmp/sdist
    tar xzf /tmp/sdist/llama_cpp_python-*.tar.gz -C /tmp
    python tests/data/served/record.py --llama-cpp /tmp/llama_cpp_python-*/vendor/llama.cpp

What it does, each step checked:

1. builds (or reuses) the ``byte`` demo pair and copies the fine-tuned checkpoint's model files into
   ``model/`` (the tests load the model from there, so the recording and the in-process reference
   are the same weights whatever later changes the demo recipe);
2. converts it to ``model.gguf`` in float32 with llama.cpp's ``convert_hf_to_gguf.py``. Two things
   the converter does not know about this checkpoint are told to it here: transformers 5 no longer
   writes GPT-2's ``n_ctx`` into ``config.json`` (it is ``n_positions``), and the demo's tokenizer,
   trained here, has a vocabulary whose hash is on no list of known models; its pre-tokenizer is
   GPT-2's own (byte-level, GPT-2's split regex, no prefix space), checked in ``tokenizer.json``
   before the converter is told ``gpt-2``;
3. starts ``python -m llama_cpp.server`` on 127.0.0.1 with that file, asks ``/v1/models`` and, for
   each text, ``/v1/completions`` with ``echo: true, logprobs: 1, max_tokens: 1, temperature: 0``
   (llama-cpp-python reads ``max_tokens: 0`` as "no limit": it would generate to the end of the
   context), the prompt being the start token ``<|endoftext|>`` written out, then the text;
   and, since the echo leaves out the log-probability of the text's first token, asks for it alone:
   the start token as the prompt, that token forced by ``logit_bias`` (the server reports the
   unbiased log-probability of the token it generates);
4. writes ``llama_cpp_completions_echo.json`` and ``models.json`` (responses as received, less the
   per-token ``top_logprobs`` maps, which the tests do not read) and stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ALIAS = "demo-byte-finetuned"
START = "<|endoftext|>"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# one text of each of the demo's kinds (summary, label, code) plus one with characters outside ASCII, which a
# byte-level tokenizer spells with byte tokens that decode to nothing on their own
EXTRA_TEXTS = ["Classify the sentiment: The café was lovely.\npositive"]


def texts() -> list[str]:
    from pytest_ftmodel import texts_of
    from pytest_ftmodel.demo import demo_data

    data = demo_data()
    kinds: dict[str, dict[str, Any]] = {}
    for record in data["val"] + data["train"]:  # the validation set has no code records
        kinds.setdefault(record.get("category", ""), record)
    return texts_of(list(kinds.values())) + EXTRA_TEXTS


def copy_checkpoint() -> Path:
    from pytest_ftmodel.demo import build_demo

    pair = build_demo("byte")
    out = HERE / "model"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(pair.finetuned / name, out / name)
    return out


def check_gpt2_pre_tokenizer(checkpoint: Path) -> None:
    pre = json.loads((checkpoint / "tokenizer.json").read_text())["pre_tokenizer"]
    if not (pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")):
        raise SystemExit(f"the tokenizer's pre-tokenizer is not GPT-2's: {pre}")


def convert(llama_cpp: Path, checkpoint: Path, out: Path) -> None:
    """Run the converter in a child process, with the two fixes described in the module doc."""
    check_gpt2_pre_tokenizer(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "checkpoint"
        shutil.copytree(checkpoint, staged)
        config = json.loads((staged / "config.json").read_text())
        config.setdefault("n_ctx", config["n_positions"])
        (staged / "config.json").write_text(json.dumps(config, indent=2))
        code = (
            "import runpy, sys\n"
            f"sys.path[:0] = [{str(llama_cpp)!r}, {str(llama_cpp / 'gguf-py')!r}]\n"
            "import conversion.base as base\n"
            "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
            f"sys.argv = ['convert_hf_to_gguf.py', {str(staged)!r}, '--outtype', 'f32', '--outfile', {str(out)!r}]\n"
            f"runpy.run_path({str(llama_cpp / 'convert_hf_to_gguf.py')!r}, run_name='__main__')\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(gguf: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--logits_all", "true",
        "--n_threads", "1", "--n_threads_batch", "1", "--seed", "0", "--verbose", "false",
        # the KV cache in float32 (GGML_TYPE_F32 = 0), not its default float16
        "--type_k", "0", "--type_v", "0",
    ]


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"no answer from {url} in {timeout:.0f} s")


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def completions_request(text: str) -> dict[str, Any]:
    return {"model": ALIAS, "prompt": START + text, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}


def first_token_request(first_id: int) -> dict[str, Any]:
    """The text's first token after the start token alone: the echo leaves its log-probability out, and
    a logit bias makes the server generate it; the log-probability it reports is the unbiased one."""
    return {"model": ALIAS, "prompt": START, "max_tokens": 1, "logprobs": 1, "temperature": 0, "logit_bias": {str(first_id): 100}}


def trimmed(response: dict[str, Any]) -> dict[str, Any]:
    for choice in response.get("choices", []):
        (choice.get("logprobs") or {}).pop("top_logprobs", None)
    return response


def versions() -> dict[str, str]:
    import llama_cpp
    import torch
    import transformers

    return {"llama-cpp-python": llama_cpp.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, required=True, help="a llama.cpp source tree (holds convert_hf_to_gguf.py)")
    args = parser.parse_args()
    checkpoint = copy_checkpoint()
    gguf = HERE / "model.gguf"
    convert(args.llama_cpp, checkpoint, gguf)
    port = free_port()
    command = server_command(gguf, port)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(f"{base}/models", proc)
        models = call(f"{base}/models")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        records = []
        for text in texts():
            request = completions_request(text)
            first = first_token_request(tokenizer(text, add_special_tokens=False).input_ids[0])
            records.append({
                "text": text,
                "request": request,
                "response": trimmed(call(f"{base}/completions", request)),
                "first_token": {"request": first, "response": trimmed(call(f"{base}/completions", first))},
            })
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    shown = [Path(sys.executable).name] + command[1:]
    shown[shown.index("--model") + 1] = "model.gguf"
    meta = {
        "recorded_with": versions(),
        "server": " ".join(shown).replace(str(port), "PORT"),
        "model": "model.gguf: model/ (the byte demo, fine-tuned) converted by convert_hf_to_gguf.py --outtype f32",
        "start_token": START,
    }
    (HERE / "llama_cpp_completions_echo.json").write_text(json.dumps({**meta, "records": records}, indent=1, ensure_ascii=False) + "\n")
    (HERE / "models.json").write_text(json.dumps(models, indent=1) + "\n")
    print(f"recorded {len(records)} completions and /v1/models into {HERE}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
