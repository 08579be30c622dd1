from __future__ import annotations

from pathlib import Path

import pytest

from conftest import fixture_text
from memgap.collect.errors import CollectorParseError
from memgap.collect.meminfo import parse_meminfo, read_meminfo

KIB = 1024


def test_real_meminfo_fields_in_bytes():
    m = parse_meminfo(fixture_text("proc/v1host/meminfo"))
    assert m.total_bytes == 24684092 * KIB
    assert m.free_bytes == 21493964 * KIB
    assert m.available_bytes == 23272200 * KIB
    assert m.cached_bytes == 1865872 * KIB
    assert m.shmem_bytes == 8856 * KIB
    assert m.active_file_bytes == 647824 * KIB
    assert m.inactive_file_bytes == 1231656 * KIB
    assert m.anon_pages_bytes == 913144 * KIB
    assert m.slab_reclaimable_bytes == 198260 * KIB
    assert m.slab_unreclaimable_bytes == 30672 * KIB
    assert (m.swap_total_bytes, m.swap_free_bytes) == (0, 0)
    assert m.used_bytes == (24684092 - 23272200) * KIB
    # Page cache counts as used here: the unified-memory GPU view.
    assert m.used_incl_cache_bytes == (24684092 - 21493964) * KIB
    assert m.used_incl_cache_bytes > m.used_bytes


def test_raw_keeps_every_key_and_counts_stay_counts():
    m = parse_meminfo(fixture_text("proc/v1host/meminfo"))
    assert len(m.raw) == 54  # every line of the file
    assert m.raw["HugePages_Total"] == 0 and m.raw["Hugepagesize"] == 2048 * KIB
    assert m.raw["Active(anon)"] == 1588 * KIB


def test_old_kernel_without_memavailable_is_unknown_not_zero():
    text = "\n".join(
        ln for ln in fixture_text("proc/v1host/meminfo").splitlines() if "MemAvailable" not in ln
    )
    m = parse_meminfo(text)
    assert m.available_bytes is None
    assert m.used_bytes is None
    assert m.used_incl_cache_bytes is not None


@pytest.mark.parametrize(
    "bad", ["MemFree: lots kB", "MemFree 12 kB", "MemFree: 12 MB", "MemFree: -1 kB"]
)
def test_malformed_line_names_source_and_line(bad):
    with pytest.raises(CollectorParseError, match=r"^/host/proc/meminfo:2: "):
        parse_meminfo("MemTotal: 1 kB\n" + bad + "\n", "/host/proc/meminfo")


def test_empty_file_is_an_error():
    with pytest.raises(CollectorParseError):
        parse_meminfo("")


def test_read_from_an_injected_root(tmp_path: Path):
    (tmp_path / "meminfo").write_text(fixture_text("proc/v1host/meminfo"))
    assert read_meminfo(tmp_path).total_bytes == 24684092 * KIB


def test_read_real_proc():
    m = read_meminfo()
    assert m.total_bytes and m.available_bytes and 0 < m.available_bytes <= m.total_bytes
