"""A memory cap and the verdict on it: whether a planned merge fits, how much it needs at
the least, and what to change when it does not fit. The CLI's ``--dry-run --max-memory``,
the refusal of a merge that cannot fit, and the window's Merge page all say it from here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mergestudio.engine.plan import MIN_STREAM_BYTES, RUNTIME_BYTES, MergePlan
from mergestudio.io.dtypes import ITEM_SIZE, dtype_code
from mergestudio.sizes import format_bytes

# Caps offered where a person picks one from a list (the window's Merge page), in bytes
# as ``--max-memory`` counts them ("512MB" is 512·10⁶). Below ~256 MB nothing fits: the
# runtime alone takes ``RUNTIME_BYTES``.
MEMORY_CAPS: tuple[int, ...] = tuple(
    size * 10**6 for size in (256, 512, 1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000)
)


@dataclass(frozen=True)
class MemoryVerdict:
    """The estimated peak of a merge under ``max_memory`` (None: no cap), and the least
    cap it fits in (its peak with the smallest streamed steps)."""

    peak_bytes: int
    max_memory: int | None
    least_bytes: int
    method: str
    largest_step: str  # the tensor whose step needs the most working memory
    whole_tensor_bytes: int  # working memory of the largest tensor held whole; 0 when all stream
    method_streams: bool  # whether the method works in steps (else every tensor is held whole)
    stage: str | None = None  # the stage of a multi-stage recipe this verdict is about

    @property
    def fits(self) -> bool:
        return self.max_memory is None or self.peak_bytes <= self.max_memory

    @property
    def streaming_would_help(self) -> bool:
        """Whether the merge would fit if its method streamed instead of holding its
        largest tensor whole (then choosing such a method is worth saying)."""
        if self.fits or self.max_memory is None or not self.whole_tensor_bytes or self.method_streams:
            return False
        return self.least_bytes - self.whole_tensor_bytes + MIN_STREAM_BYTES <= self.max_memory

    def summary(self) -> str:
        """One line: the peak, and whether it fits the cap."""
        where = f"stage {self.stage!r} " if self.stage else ""
        if self.max_memory is None:
            return f"no cap: {where}needs about {format_bytes(self.peak_bytes)}"
        if self.fits:
            return f"fits: {where}needs about {format_bytes(self.peak_bytes)} of {format_bytes(self.max_memory)}"
        return (
            f"does not fit: {where}needs about {format_bytes(self.least_bytes)}, "
            f"more than the {format_bytes(self.max_memory)} cap"
        )

    def advice(self) -> str:
        """What would make it fit, and why it needs what it needs ("" when it fits)."""
        if self.fits:
            return ""
        text = f"raise the cap to at least {format_bytes(self.least_bytes)}"
        return f"{text}, or choose a method that streams ({self.reason()})" if self.streaming_would_help else (
            f"{text} ({self.reason()})"
        )

    def reason(self) -> str:
        """Where the memory goes: the tensor held whole, else the runtime."""
        if self.whole_tensor_bytes:
            holder = self.method if not self.method_streams else "vocabulary alignment or post-processing"
            return f"{holder} holds {self.largest_step} whole: {format_bytes(self.whole_tensor_bytes)}"
        return f"the engine's runtime alone takes about {format_bytes(RUNTIME_BYTES)}"

    def refusal(self) -> str:
        """The message of a merge refused for this verdict."""
        needs = self.summary().removeprefix("does not fit: ")
        return f"{MEMORY_REFUSAL} this merge {needs}; {self.advice()}; nothing was written"


# How a refusal for memory begins (a stage's refusal is prefixed with the stage).
MEMORY_REFUSAL = "max_memory:"


def compute_item_bytes(compute_dtype: str) -> int:
    return ITEM_SIZE[dtype_code(compute_dtype)]


def memory_verdict(
    plan: MergePlan, max_memory: int | None, compute_dtype: str = "float32", stage: str | None = None
) -> MemoryVerdict:
    """Whether ``plan`` fits ``max_memory`` bytes when run in ``compute_dtype`` (headers
    only: nothing is read)."""
    compute_bytes = compute_item_bytes(compute_dtype)
    estimate = plan.estimate(compute_bytes, max_memory=max_memory)
    least = plan.estimate(compute_bytes, chunk_bytes=MIN_STREAM_BYTES)
    return MemoryVerdict(
        estimate.peak_memory_bytes,
        max_memory,
        least.peak_memory_bytes,
        plan.method.name,
        least.largest_tensor,
        least.whole_tensor_bytes,
        plan.method.elementwise or plan.method.streamed is not None,
        stage,
    )


def worst_verdict(verdicts: Sequence[MemoryVerdict]) -> MemoryVerdict:
    """The verdict that decides a multi-stage merge (stages run one after another): the
    first stage that does not fit, else the one with the highest peak."""
    refused = [v for v in verdicts if not v.fits]
    if refused:
        return refused[0]
    return max(verdicts, key=lambda v: v.peak_bytes)
