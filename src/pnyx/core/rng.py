"""The injected source of randomness: protocols draw only from an object of this shape."""

from __future__ import annotations

from typing import Protocol

_MASK64 = (1 << 64) - 1


class Rng(Protocol):
    """What a protocol may ask of its random number generator.

    ``random.Random(seed)`` satisfies this; runtimes pass one seeded per node.
    """

    def random(self) -> float:
        """A float uniformly drawn from [0, 1)."""
        ...

    def randrange(self, start: int, stop: int) -> int:
        """An integer uniformly drawn from [start, stop)."""
        ...


class SplitMix64:
    """A tiny, pure, seeded RNG (SplitMix64) for tests and runtime-free use."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def random(self) -> float:
        return (self._next() >> 11) / float(1 << 53)

    def randrange(self, start: int, stop: int) -> int:
        span = stop - start
        assert span > 0, f"empty range [{start}, {stop})"
        return start + self._next() % span
