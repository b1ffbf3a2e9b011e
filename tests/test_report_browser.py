"""The report in a real browser: Debian's headless Chromium, driven over the DevTools protocol.

The page must load with no console error, no uncaught exception, no error in the
browser's log (where a Content Security Policy violation would appear), no failed
load, and no request for anything but the file itself and its embedded ``data:``
images; every figure must be decoded, laid out at a non-zero size, and not blank
in a screenshot of the page. Skips when Chromium is absent, unless
``HADIS_REQUIRE_BROWSER=1`` (CI sets it after installing Chromium), then fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from browser import blank, chromium, file_url, load
from report_helpers import SIM_ARGS, synthetic_run

ROOT = Path(__file__).resolve().parents[1]

if chromium() is None:
    if os.environ.get("HADIS_REQUIRE_BROWSER") == "1":
        pytest.fail("HADIS_REQUIRE_BROWSER=1 but chromium is not installed", pytrace=False)
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


def cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "hadis_profile", *args], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_report_renders_offline_in_chromium(tmp_path):
    run = synthetic_run(tmp_path, n_prompts=60)
    table = tmp_path / "table.json"
    cli("pareto", "--run", str(run), "--out", str(table))
    cli("simulate", str(table), "--run", str(run), *SIM_ARGS, "--out", str(tmp_path / "sim"))
    out = tmp_path / "report"
    cli(
        "report", str(run), "--table", str(table), "--sim", str(tmp_path / "sim"), "--out", str(out)
    )
    written = sorted(p.stem for p in (out / "figures").glob("*.png"))

    page = load(file_url(out / "index.html"))

    assert page.console_errors == [] and page.exceptions == []
    assert page.log_errors == [] and page.failed == []
    outside = [u for u in page.requests if u != page.url and not u.startswith("data:image/png")]
    assert outside == [], f"the page requested {outside}"
    assert sorted(f["figure"] for f in page.figures) == written and len(written) >= 9
    for f in page.figures:
        assert f["complete"] and min(f["natural"]) > 0, f"{f['figure']} was not decoded"
        assert min(f["rect"][2:]) > 50, f"{f['figure']} was laid out at {f['rect'][2:]}"
        assert not blank(page.shots[f["figure"]]), f"{f['figure']} is blank on screen"
    print(f"chromium loaded and checked the report in {page.seconds:.1f} s")


def test_the_check_catches_outside_requests_errors_and_blank_figures(tmp_path):
    """The same checks on a bad page: each fault is seen (so the test above can fail)."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), "white").save(buf, format="PNG")
    white = base64.b64encode(buf.getvalue()).decode()
    (tmp_path / "bad.html").write_text(
        "<!DOCTYPE html><html><body>"
        f'<img data-figure="white" src="data:image/png;base64,{white}">'
        '<img data-figure="missing" src="figures/missing.png">'
        '<img src="https://example.invalid/x.png">'
        "<script>console.error('boom'); undefinedFunction();</script>"
        "</body></html>"
    )
    page = load(file_url(tmp_path / "bad.html"))
    assert page.console_errors and page.exceptions and page.failed
    assert any(u.startswith("https://example.invalid") for u in page.requests)
    figures = {f["figure"]: f for f in page.figures if f["figure"]}
    assert blank(page.shots["white"]) and figures["missing"]["natural"] == [0, 0]
