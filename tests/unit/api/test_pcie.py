import pytest

from egpu_api.pcie import LinkSpeed, bottleneck, link_bandwidth_mbps


@pytest.mark.parametrize(
    ("generation", "width", "mbps"),
    [
        (1, 1, 250),  # 2.5 GT/s, 8b/10b
        (2, 1, 500),  # ExpressCard: PCIe 2.0 x1
        (3, 1, 984),  # Raspberry Pi 5 eGPU dock
        (3, 4, 3938),  # Thunderbolt 3 tunnel
        (4, 4, 7876),  # OCuLink
        (4, 16, 31507),
        (5, 16, 63015),  # 58.7 GiB/s, the H100's theoretical host link
        (6, 16, 121000),
    ],
)
def test_bandwidth_per_generation_and_width(generation: int, width: int, mbps: int) -> None:
    assert link_bandwidth_mbps(generation, width) == mbps


@pytest.mark.parametrize(("generation", "width"), [(0, 1), (7, 1), (3, 3), (3, 0)])
def test_impossible_links_are_rejected(generation: int, width: int) -> None:
    with pytest.raises(ValueError, match="PCIe"):
        link_bandwidth_mbps(generation, width)


def test_bottleneck_is_the_slowest_hop_not_the_gpu_link() -> None:
    gpu_link, switch_uplink = LinkSpeed(4, 16), LinkSpeed(3, 1)
    assert bottleneck([gpu_link, switch_uplink]) == switch_uplink


def test_bottleneck_tie_prefers_the_hop_nearest_the_gpu() -> None:
    # Gen2 x2 and Gen1 x4 carry the same 1000 MB/s.
    assert bottleneck([LinkSpeed(2, 2), LinkSpeed(1, 4)]) == LinkSpeed(2, 2)


def test_empty_path_has_no_bottleneck() -> None:
    with pytest.raises(ValueError, match="at least one link"):
        bottleneck([])


def test_link_speed_reads_like_lspci() -> None:
    assert str(LinkSpeed(3, 1)) == "Gen3 x1"
