"""PCIe link arithmetic: raw rate per generation and the bottleneck of a path.

A GPU behind an eGPU dock or a PCIe switch may report a wide, fast link to the nearest port
while a narrow hop further up limits every transfer; the bottleneck is the slowest hop on
the way to the root port. Rates here are the theoretical payload rate after line encoding;
protocol overhead (TLP headers, flow control) is left to whoever turns them into an
expected transfer rate.
"""

from dataclasses import dataclass
from typing import Final

#: Transfer rate per lane in GT/s and the line encoding's payload fraction, per generation.
#: Gen1-2 use 8b/10b encoding; Gen3 and later use 128b/130b (Gen6's FLIT mode is close
#: enough to 242/256 that 128b/130b would overstate it by <4%; we use its own figure).
_GENERATIONS: Final[dict[int, tuple[float, float]]] = {
    1: (2.5, 8 / 10),
    2: (5.0, 8 / 10),
    3: (8.0, 128 / 130),
    4: (16.0, 128 / 130),
    5: (32.0, 128 / 130),
    6: (64.0, 242 / 256),
}

MAX_GENERATION: Final = max(_GENERATIONS)
VALID_WIDTHS: Final = (1, 2, 4, 8, 12, 16, 32)


@dataclass(frozen=True, order=True)
class LinkSpeed:
    """A PCIe link's generation and lane count; ``bandwidth_mbps`` is its one-way payload rate."""

    generation: int
    width: int

    @property
    def bandwidth_mbps(self) -> int:
        """Theoretical one-direction payload bandwidth in MB/s (10^6 bytes per second)."""
        return link_bandwidth_mbps(self.generation, self.width)

    def __str__(self) -> str:
        return f"Gen{self.generation} x{self.width}"


def link_bandwidth_mbps(generation: int, width: int) -> int:
    """Theoretical one-direction payload bandwidth of a link in MB/s, rounded down.

    >>> link_bandwidth_mbps(3, 1)
    984
    >>> link_bandwidth_mbps(2, 1)
    500
    """
    if generation not in _GENERATIONS:
        raise ValueError(f"PCIe generation must be 1..{MAX_GENERATION}, got {generation}")
    if width not in VALID_WIDTHS:
        raise ValueError(f"PCIe width must be one of {VALID_WIDTHS}, got {width}")
    gigatransfers, payload_fraction = _GENERATIONS[generation]
    # One transfer carries one bit per lane: GT/s x lanes x payload fraction / 8 bits = GB/s.
    return int(gigatransfers * 1000 * width * payload_fraction / 8)


def bottleneck(links: list[LinkSpeed]) -> LinkSpeed:
    """The link with the lowest bandwidth; on a tie, the one nearest the GPU (first) wins."""
    if not links:
        raise ValueError("a PCIe path has at least one link")
    return min(links, key=lambda link: link.bandwidth_mbps)


#: Fraction of the theoretical rate a host-to-device copy achieves. Measured on an H100 in a
#: passthrough VM (PCIe Gen5 x16): pinned copies reached 51.05 GiB/s of 58.7 GiB/s theoretical,
#: 0.87; TLP headers and flow control cost about the same share on narrow links. Pageable copies
#: can be far slower on fast links (7.26 GiB/s there: bound by the host's memcpy, not the link);
#: the node agent's optional probe measures that per host.
COPY_EFFICIENCY: Final = 0.87


def effective_bandwidth_mbps(speed: LinkSpeed) -> int:
    """What a pinned host-to-device copy over ``speed`` can expect, in MB/s."""
    return int(speed.bandwidth_mbps * COPY_EFFICIENCY)
