"""Token ids of OpenAI's tokenizer (cl100k_base), as OpenAI clients send embedding input.

langchain's ``OpenAIEmbeddings`` (and others that follow OpenAI's advice to count tokens with
tiktoken) sends each text as token ids of cl100k_base, tiktoken's encoding for the embedding
models and its fallback for a model name it does not know. They are decoded back to text here,
and the embedding model tokenizes that text its own way. The vocabulary comes with the
``bpe-openai`` wheel, so nothing is downloaded (tiktoken fetches its files at run time).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from common.errors import BadRequestError

ENCODING = "cl100k_base"


@functools.cache
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding(ENCODING)


def decode_openai_tokens(ids: Sequence[int], param: str = "input") -> str:
    """The text of cl100k_base token ``ids``; a 400 for an id outside its vocabulary."""
    encoding = _encoding()
    bad = next((token for token in ids if not 0 <= token < encoding.n_vocab), None)
    if bad is not None:
        raise BadRequestError(
            f"Token id {bad} is not a {ENCODING} token (0..{encoding.n_vocab - 1}): token "
            "arrays are read as OpenAI's tokenizer writes them.",
            param=param,
        )
    return str(encoding.decode(list(ids)))
