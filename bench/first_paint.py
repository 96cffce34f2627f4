"""First paint of the dashboard: seconds from opening the root URL in Chromium until Home has drawn
its title, the "not for clinical use" note and the runs section, on a freshly started server
(Python, Streamlit and our modules all imported cold by that first request).

    .venv/bin/python bench/first_paint.py [--repeats 3]

Each repeat starts a new `streamlit run app.py` (as `make run` does) on an empty runs folder, waits
until the server answers its health check, then opens the page. Also measured on the same server:
a second tab (warm). Target: the cold first paint in 2 s or less.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, serve_dashboard  # noqa: E402

TARGET_S = 2.0


def seconds_to_paint(browser, url: str) -> float:
    """From navigation start until Home's title, clinical note and runs section are visible."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name="CXR Lab").wait_for(timeout=60_000)
    page.get_by_text("not for clinical use").first.wait_for(timeout=60_000)
    page.get_by_role("heading", name="Recent runs").wait_for(timeout=60_000)
    elapsed = time.perf_counter() - started
    page.close()
    return elapsed


def measure(repeats: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright
    cold, warm = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as folder:
                env = {"CXR_RUNS_DIR": f"{folder}/runs", "CXR_CACHE_DIR": f"{folder}/cache"}
                with serve_dashboard(Path(folder) / "streamlit.log", env) as url:
                    cold.append(seconds_to_paint(browser, url))
                    warm.append(seconds_to_paint(browser, url))
        browser.close()
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cold, warm = measure(args.repeats)
    met = "met" if statistics.median(cold) <= TARGET_S else "NOT met"
    print(f"first paint of Home, fresh server: median {statistics.median(cold):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in cold)}); target <= {TARGET_S:.1f} s: {met}")
    print(f"second tab, same server:          median {statistics.median(warm):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in warm)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
