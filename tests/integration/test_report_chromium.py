"""The HTML report in a real browser (Debian's headless chromium): it renders, is not
blank, the page makes no request of its own, and what the browser built opens with the
answer paragraph and the verdicts (on a native-vs-sandbox store and on the seed study)."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from html import unescape
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.memory import memory_summary
from memgap.series import COLUMNS, MemorySeries
from memgap.store import Store

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup.sh installs it)")
# Requests chromium makes for itself (component updater, time and account checks) even
# with background networking off; the page's own requests would go anywhere else.
BROWSER_OWN = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gstatic\.com|~notfound)(/|$)")
MIB = 1 << 20
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of an 8-bit RGB/RGBA non-interlaced PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (2, 6)
            channels = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if channels == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3))
        prev = line
    return width, height, rows


def _store(db: Path) -> None:
    with Store(db) as st:
        for i in range(6):
            env = "native" if i % 2 == 0 else "sandbox"
            s = MemorySeries(rate_hz=10.0)
            n = 60
            s.columns = {c: [None] * n for c in COLUMNS}
            s.columns["t_s"] = [k / 10 for k in range(n)]
            s.columns["process_rss_bytes"] = [int((100 + 200 * (1 - math.exp(-k / 8)) + 20 * (i % 2)) * MIB)
                                              for k in range(n)]
            s.columns["host_used_bytes"] = [2000 * MIB + v for v in s.columns["process_rss_bytes"]]
            s.marks = {"start": 0.0, "ready": 1.0, "end": 5.9}
            st.add_run({"run_id": f"r{i}", "created_at": f"2026-01-01T00:0{i}:00+00:00", "status": "ok",
                        "environment": env, "engine": "llamacpp", "model": "smollm2 <b>&</b>",
                        "output_tokens_per_s": 70.0 + i % 3, "engine_report": {"kv_cache_bytes": 180 * MIB},
                        "memory": memory_summary(s)}, series=s.to_dict())


def _chromium(page: Path, tmp: Path, name: str) -> tuple[Path, list[str]]:
    shot, netlog = tmp / f"{name}.png", tmp / f"{name}-net.json"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / (name + '-profile')}",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}", "--window-size=1100,1600",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    urls = sorted(set(re.findall(r'"url":"(https?://[^"]*)"', netlog.read_text(errors="replace"))))
    return shot, urls


def _dom(page: Path, tmp: Path, name: str) -> str:
    """The document as chromium built it from the page (its DOM, serialized)."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / (name + '-dom')}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return done.stdout


def _answers_in_dom(dom: str) -> list[str]:
    """The text of each answer paragraph, in page order; the page must open with them."""
    headings = re.findall(r"<h([12])>(.*?)</h\1>", dom, re.S)
    assert [h for _, h in headings][1] == "The answer"  # the first section after the title
    first_model = dom.index("<h2>Model")
    paras = [(m.start(), unescape(m.group(1))) for m in re.finditer(r'<p class="answer">(.*?)</p>', dom, re.S)]
    assert paras and all(at < first_model for at, _ in paras)
    return [text for _, text in paras]


@needs_chromium
def test_report_renders_not_blank_and_requests_nothing(tmp_path: Path) -> None:
    db, html, js = tmp_path / "s.db", tmp_path / "report.html", tmp_path / "report.json"
    _store(db)
    assert main(["report", "--store", str(db), "--html", str(html), "--json", str(js)]) == 0
    # the browser finds the answer paragraph first, with the text the JSON carries as a field
    expected = [a["answer"]["text"] for a in json.loads(js.read_text())["answers"]]
    dom = _dom(html, tmp_path, "report")
    assert _answers_in_dom(dom) == expected
    assert expected[0].startswith("KV cache 180.0 MiB in both (no difference)")
    assert "<td>page_cache</td>" in dom and "explains the KV difference?" in dom
    assert "<b>&amp;</b>" not in dom and "smollm2 &lt;b&gt;&amp;&lt;/b&gt;" in dom  # store text is text, not markup
    text = html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "default-src 'none'" in text.replace("&#x27;", "'")

    shot, urls = _chromium(html, tmp_path, "report")
    page_requests = [u for u in urls if not BROWSER_OWN.match(u)]
    assert page_requests == []
    w, h, rows = _png_pixels(shot.read_bytes())
    assert (w, h) == (1100, 1600)
    pixels = [row[k:k + 3] for row in rows[::4] for k in range(0, len(row), 12)]
    non_white = sum(p != b"\xff\xff\xff" for p in pixels) / len(pixels)
    colours = {p for p in pixels}
    assert non_white > 0.02, non_white  # text and charts drawn
    assert len(colours) > 20  # anti-aliased text and coloured chart lines, not a flat page
    # the environment colours of the timeline chart are on the page
    assert any(p[2] > 150 and p[0] < 80 for p in pixels)  # the blue of the first environment


@needs_chromium
def test_seed_report_opens_with_the_rule_and_the_free_memory_it_read(tmp_path: Path) -> None:
    db, html = tmp_path / "seed.db", tmp_path / "seed.html"
    assert main(["import", "benchmark-spark", str(SEED), "--store", str(db)]) == 0
    assert main(["report", "--store", str(db), "--html", str(html), "--title", "seed"]) == 0
    paras = _answers_in_dom(_dom(html, tmp_path, "seed"))
    assert len(paras) == 3  # deepseek, gpt120b, qwen72b: container against native
    for p in paras:
        assert re.match(r"KV cache [\d.]+ \u2192 [\d.]+ GiB \(\u2212[\d.]+\)\. TensorRT-LLM's rule explains it: "
                        r"it read [\d.]+ GiB less free memory when it sized the cache", p), p
    assert "KV cache 44.6 \u2192 16.7 GiB (\u221227.9)" in paras[0]  # deepseek


@needs_chromium
def test_the_request_check_would_see_a_page_request(tmp_path: Path) -> None:
    """Control: a page that loads an image from elsewhere shows up in the net log."""
    page = tmp_path / "control.html"
    page.write_text('<html><body><img src="http://memgap-control.invalid/x.png"></body></html>')
    _, urls = _chromium(page, tmp_path, "control")
    assert any("memgap-control.invalid" in u for u in urls), json.dumps(urls)
