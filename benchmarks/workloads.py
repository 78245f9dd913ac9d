"""The workload shapes of the core benchmark: a function, its items, and a check of its results.

Every function lives at module level so that every start method (fork, forkserver, spawn, loky)
can import it by name. CPU work is a fixed number of pure-Python loop iterations, not a clock
watched until it runs out: the work is then the same in every process and under every backend,
threads included (a loop that watched ``time.process_time`` would finish early when two threads
spin, since that clock counts the CPU of the whole process), and its result proves it was done.
``python -m benchmarks.workloads`` prints each shape's wall and CPU seconds per item here.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPES", "Checksum", "Shape", "same_checksum", "spin"]

Checksum = str | float

# Iterations of `spin` per millisecond of CPU on the reference machine (2 cores, Python 3.11):
# 1,000,000 iterations took 50 to 56 ms. Other machines scale every shape's duration alike.
ITERATIONS_PER_MS = 19_000
# The skewed shape's durations are lognormal with this sigma: the slowest of 300 items then runs
# about 20 times longer than the median one.
SKEW_SIGMA = 1.0
# Floats computed with different BLAS thread counts differ in their last bits, not beyond this.
FLOAT_TOLERANCE = 1e-9
_MB = 1 << 20
# `python -m benchmarks.workloads` times each shape for about this long.
DESCRIBE_SECONDS = 0.2


def spin(iterations: int) -> int:
    """Busy the CPU in pure Python (holding the GIL) and return a value that proves it ran."""
    acc = 0
    for i in range(iterations):
        acc = (acc * 31 + i) % 1_000_003
    return acc


# --- the functions -------------------------------------------------------------------------------


def square_plus_one(x: int) -> int:
    """Cheap: well under a microsecond, far less than any pool's per-item overhead."""
    return x * x + 1


def burn_5ms(seed: int) -> int:
    """About 5 ms of pure-Python CPU."""
    return spin(5 * ITERATIONS_PER_MS + seed % 7)


def burn_1ms(seed: int) -> int:
    """About 1 ms of pure-Python CPU."""
    return spin(ITERATIONS_PER_MS + seed % 7)


def blake2b_digest(data: bytes) -> bytes:
    """Little work on a large input: hashlib releases the GIL while it hashes."""
    return hashlib.blake2b(data, digest_size=16).digest()


def random_megabyte(seed: int) -> bytes:
    """A large output: 1 MB of seeded random bytes (a few milliseconds to make)."""
    return random.Random(seed).randbytes(_MB)


def wait_10ms(x: int) -> int:
    """I/O-bound: 10 ms of waiting, almost no CPU."""
    time.sleep(0.010)
    return x


_MODEL: tuple[int, ...] | None = None
_MODEL_LOCK = threading.Lock()
# Milliseconds of CPU the lazy "model" load costs in each fresh process.
MODEL_LOAD_MS = 300


def _model() -> tuple[int, ...]:
    """Load the model once per process, as a stage that loads weights on first use does."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            spin(MODEL_LOAD_MS * ITERATIONS_PER_MS)
            _MODEL = tuple(range(100_000))
    return _MODEL


def predict(x: int) -> int:
    """A costly first call per process (the model load), then about 1 ms per call."""
    model = _model()
    return model[x % len(model)] + spin(ITERATIONS_PER_MS)


# 400 x 400 over 80 items: 300 x 300 over 200 items (the example) shows the same effect,
# but there its oversubscribed configurations took 10 to 30 s each, a third of the whole run.
BLAS_MATRIX_SIZE = 400


def singular_value_sum(seed: int) -> float:
    """BLAS-threaded numpy: the singular values of a seeded 400 x 400 matrix (about 16 ms)."""
    # Imported on first use, as many stage functions do: the other shapes' workers never pay for
    # it, and a worker whose caller never imported numpy loads OpenBLAS itself.
    import numpy as np

    size = BLAS_MATRIX_SIZE
    matrix = np.random.default_rng(seed).standard_normal((size, size))
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


# --- the items -----------------------------------------------------------------------------------


def _integers(n: int) -> Callable[[], list[int]]:
    return lambda: list(range(n))


def _megabyte_inputs() -> list[bytes]:
    """200 distinct 1 MB byte strings (one random block, each with its index in front)."""
    block = random.Random(0).randbytes(_MB)
    return [i.to_bytes(8, "little") + block[8:] for i in range(200)]


def _skewed_iterations() -> list[int]:
    """300 items of lognormal CPU cost, 2 s of serial work in all."""
    rng = random.Random(7)
    weights = [rng.lognormvariate(0.0, SKEW_SIGMA) for _ in range(300)]
    scale = 2_000 * ITERATIONS_PER_MS / sum(weights)
    return [max(1, round(weight * scale)) for weight in weights]


def _rare_slow_iterations() -> list[int]:
    """400 items: one in ten (at seeded places) costs 20 ms, the others 0.1 ms. A dry run of the
    first few items likely sees none of the slow ones."""
    rng = random.Random(3)
    return [round((20 if rng.random() < 0.1 else 0.1) * ITERATIONS_PER_MS) for _ in range(400)]


def _sorted_iterations() -> list[int]:
    """300 items sorted by cost, from nothing up to 6 ms: the first items tell little."""
    return [1 + round(i * 0.02 * ITERATIONS_PER_MS) for i in range(300)]


def _generated(n: int) -> Callable[[], Iterator[int]]:
    def generate() -> Iterator[int]:
        yield from range(n)

    return generate


# --- checks ---------------------------------------------------------------------------------------


def digest(results: list[Any]) -> str:
    """A hash of every result in order (bytes as they are, anything else by its repr)."""
    hasher = hashlib.blake2b(digest_size=16)
    for result in results:
        hasher.update(result if isinstance(result, bytes) else repr(result).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()


def float_sum(results: list[Any]) -> float:
    """The sum of float results, compared with a tolerance (see FLOAT_TOLERANCE)."""
    return math.fsum(results)


def same_checksum(got: Checksum, expected: Checksum) -> bool:
    """Whether two checksums agree: exactly, or within FLOAT_TOLERANCE for floats."""
    if isinstance(got, float) and isinstance(expected, float):
        return math.isclose(got, expected, rel_tol=FLOAT_TOLERANCE)
    return got == expected


# --- the shapes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One workload shape of the benchmark.

    Attributes:
        name: the short name used on the command line.
        description: what it stands for, in a few words.
        func: the function mapped over the items (module level, importable by name).
        build: builds the items (not timed); may return a generator.
        n_items: how many items ``build`` yields.
        checksum: reduces the results to a value compared with the plain loop's.
        thread_counts: thread counts of the fixed grid: none where the work is pure-Python CPU
            (threads run it one at a time, as the loop does), more than the CPUs for waits only.
        waits: the work mostly waits, so only many threads can pay: processes (as many as the
            CPUs) are measured at one chunk size only.
        max_chunks: chunk sizes that would make more chunks than this are left out of the grid:
            their dispatch overhead alone would exceed the loop's time.
        min_speedup: the least speedup (loop over execute) the bar asks of this shape, set for
            the two CPUs it was written on; None where it asks none.
    """

    name: str
    description: str
    func: Callable[[Any], Any]
    build: Callable[[], Iterable[Any]]
    n_items: int
    checksum: Callable[[list[Any]], Checksum] = digest
    thread_counts: tuple[int, ...] = (2,)
    waits: bool = False
    max_chunks: int = 10_000
    min_speedup: float | None = None


SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        Shape(
            "cheap", "x*x+1 over 300k ints", square_plus_one, _integers(300_000), 300_000,
            max_chunks=5_000,
        ),
        Shape(
            "cpu", "5 ms pure-Python CPU x 400", burn_5ms, _integers(400), 400,
            thread_counts=(), min_speedup=1.8,
        ),
        Shape(
            "skewed", "lognormal CPU (max ~20x median), 2 s serial, x 300", spin,
            _skewed_iterations, 300, thread_counts=(),
        ),
        Shape(
            "large-in", "1 MB bytes in, blake2b (releases the GIL), x 200", blake2b_digest,
            _megabyte_inputs, 200,
        ),
        Shape("large-out", "1 MB random bytes out, x 200", random_megabyte, _integers(200), 200),
        Shape(
            "io", "sleep 10 ms x 300", wait_10ms, _integers(300), 300,
            thread_counts=(2, 8, 32, 64), waits=True,
        ),
        Shape(
            "cold-start", "0.3 s model load per process, then 1 ms x 1000", predict,
            _integers(1_000), 1_000, thread_counts=(),
        ),
        Shape(
            "blas", "numpy SVD of a 400x400 matrix x 80", singular_value_sum, _integers(80),
            80, checksum=float_sum,
        ),
        Shape(
            "generator", "a generator of 2000 x 1 ms CPU", burn_1ms, _generated(2_000), 2_000,
            thread_counts=(),
        ),
        Shape(
            "rare-slow", "1 call in 10 takes 20 ms, the rest 0.1 ms, x 400", spin,
            _rare_slow_iterations, 400, thread_counts=(),
        ),
        Shape(
            "sorted", "CPU sorted by size, 0 to 6 ms, x 300", spin, _sorted_iterations, 300,
            thread_counts=(),
        ),
    )
}  # fmt: skip


def _describe() -> None:
    """Print each shape's wall and CPU seconds per item, measured on its first items here."""
    for shape in SHAPES.values():
        items = iter(shape.build())
        shape.func(next(items))  # the first call may load a model
        calls, wall, cpu = 0, time.perf_counter(), time.process_time()
        for item in items:
            shape.func(item)
            calls += 1
            if time.perf_counter() - wall > DESCRIBE_SECONDS:
                break
        wall, cpu = (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls
        print(
            f"{shape.name:<11} {wall * 1e3:8.3f} ms wall/item  {cpu * 1e3:8.3f} ms CPU/item  "
            f"~{wall * shape.n_items:5.2f} s serial  ({shape.description})"
        )


if __name__ == "__main__":
    _describe()
