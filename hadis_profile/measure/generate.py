"""K images per prompt, each from its own fixed seed, batched.

The cascade compares models *on the same prompts and the same noise*, and a
resumed run must regenerate exactly what an uninterrupted one would have. So
image ``j`` of prompt ``i`` always starts from ``image_seed(base_seed, i, j)``,
drawn by its own CPU ``torch.Generator``: diffusers draws each batch element's
initial latents from its own generator when given a list, so an image's noise
does not depend on the batch size, on which other images share its batch, or on
the device (CPU generators give the same noise on every GPU). The image itself
is the same up to floating-point rounding: batched kernels may sum in another
order (on the tiny CPU pipelines pixels differ by up to about 2e-3 between batch
1 and batch 4), so a run that must reproduce another bit for bit keeps
``gen_batch`` fixed (shards do: ``run --shard`` docs).

Images come back per prompt, as soon as a prompt's K images are complete, so a
caller can commit one (model, prompt) unit at a time. Since the batch does not
change which image is made, a batch that runs out of memory is simply retried at
half the size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGES_PER_PROMPT = 4
SEED_FORMAT = "hadis-profile/image-seed/1"


def image_seed(base_seed: int, prompt_id: int, image_index: int) -> int:
    """A 63-bit seed from (base seed, prompt id, image index), stable across platforms.

    sha256 rather than Python's ``hash`` (salted per process) or arithmetic
    (nearby seeds give correlated streams in some generators); 63 bits so the
    seed fits a signed SQLite integer.
    """
    text = f"{SEED_FORMAT}:{int(base_seed)}:{int(prompt_id)}:{int(image_index)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass
class PromptImages:
    """The K images of one prompt, with the seeds that made them."""

    prompt_id: int
    prompt: str
    seeds: list[int]
    images: list[Any]  # PIL images, or CHW tensors for output_type="pt"


def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    call_kwargs: dict[str, Any],
    *,
    prompt_ids: Iterable[int] | None = None,
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT,
    base_seed: int = 0,
    batch_size: int = 4,
    output_type: str = "pil",
    device: str = "cpu",
    on_call: Callable[[int, float], None] | None = None,
    on_oom: Callable[[int, str], None] | None = None,
) -> Iterator[PromptImages]:
    """Yield :class:`PromptImages` for each prompt, in order, batching across prompts.

    ``prompts[i]`` is prompt id ``prompt_ids[i]`` (default ``i``); the ids feed
    the seeds, so pass the run's ids when generating a subset (resume).

    Each pipeline call is timed like a latency measurement (CUDA events on a
    GPU) and reported to ``on_call(batch, seconds)``, so the calls that make
    the images can also serve as latency samples. A call that runs out of
    memory is retried at half the batch (the batch does not change which image
    is made, see the module docstring), after ``on_oom(new_batch, message)`` has
    had a chance to repair the pipeline; at batch 1 the error propagates.
    """
    import torch

    from hadis_profile.measure.latency import Timer
    from hadis_profile.measure.memory import free_memory, is_oom

    ids = list(prompt_ids) if prompt_ids is not None else list(range(len(prompts)))
    if len(ids) != len(prompts):
        raise ValueError("prompt_ids and prompts differ in length")
    k = int(images_per_prompt)
    if k < 1 or batch_size < 1:
        raise ValueError("images_per_prompt and batch_size must be at least 1")
    timer = Timer(device)
    jobs = [(n, j) for n in range(len(prompts)) for j in range(k)]
    pending: dict[int, list[Any]] = {}
    next_out = 0
    start, size = 0, int(batch_size)
    while start < len(jobs):
        chunk = jobs[start : start + size]
        seeds = [image_seed(base_seed, ids[n], j) for n, j in chunk]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        result: list[Any] = []
        error: str | None = None
        try:
            seconds = timer(
                lambda chunk=chunk, generators=generators, result=result: result.append(
                    pipe(
                        prompt=[prompts[n] for n, _ in chunk],
                        generator=generators,
                        output_type=output_type,
                        **call_kwargs,
                    )
                )
            )
        except Exception as e:
            if size == 1 or not is_oom(e):
                raise
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if error is not None:  # out of the except block: the frames' tensors are gone
            result.clear()
            free_memory(device)
            size = max(1, size // 2)
            if on_oom is not None:
                on_oom(size, error)
            continue
        if on_call is not None:
            on_call(len(chunk), seconds)
        start += len(chunk)
        for (n, _), img in zip(chunk, result[0].images, strict=True):
            pending.setdefault(n, []).append(img)
        while next_out < len(prompts) and len(pending.get(next_out, ())) == k:
            n = next_out
            yield PromptImages(
                prompt_id=ids[n],
                prompt=prompts[n],
                seeds=[image_seed(base_seed, ids[n], j) for j in range(k)],
                images=pending.pop(n),
            )
            next_out += 1
