"""Image placeholders in a prompt, for every engine that reads images.

A chat template writes a run of tokens for each image (``<image>``, ``[IMG]``, or a start
token, a pad and an end token); the engine replaces each run with the tokens its model reads
the image as. Both ends must agree on the count, or the request is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import BadRequestError


def _places(prompt_ids: Sequence[int], run: Sequence[int]) -> list[int]:
    """Where ``run`` starts in ``prompt_ids`` (occurrences that do not overlap)."""
    places: list[int] = []
    width = len(run)
    index = 0
    while index <= len(prompt_ids) - width:
        if list(prompt_ids[index : index + width]) == list(run):
            places.append(index)
            index += width
        else:
            index += 1
    return places


def splice_images(
    prompt_ids: Sequence[int], run: Sequence[int], expansions: Sequence[Sequence[int]]
) -> list[int]:
    """``prompt_ids`` with the ``i``-th occurrence of ``run`` replaced by ``expansions[i]``."""
    places = _places(prompt_ids, run)
    if len(places) != len(expansions):
        raise BadRequestError(
            f"The chat prompt has {len(places)} image placeholders for {len(expansions)} "
            "images: the chat template must write the image token for each "
            "{'type': 'image'} part.",
            param="messages",
        )
    spliced: list[int] = []
    start = 0
    for place, expansion in zip(places, expansions, strict=True):
        spliced += prompt_ids[start:place]
        spliced += expansion
        start = place + len(run)
    return spliced + list(prompt_ids[start:])
