"""The README's picture of the page: ``python benchmarks/app_screenshot.py --out docs/app.png``.

Starts ``condvae serve`` on loopback with no dataset folder, so that the example images are
draws of the model (nothing derived from a dataset goes into the repository), then drives
headless Chromium (Debian's ``chromium`` and ``chromium-driver``) with Selenium: the left half
observed, a ``gvi`` fit, where to look next; and saves a screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from condvae.app import ServeConfig, create_app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/app.png")
    parser.add_argument("--model", default="mnist-mlp-z2")
    parser.add_argument("--example", type=int, default=3, help="which example image")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    empty = tempfile.mkdtemp()
    app = create_app(ServeConfig(models=(args.model,), data_dir=empty, preload=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    flags = "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-sync "
    flags += "--disable-background-networking --disable-component-update --window-size=1400,1120"
    for flag in flags.split():
        options.add_argument(flag)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        d.get(f"http://127.0.0.1:{port}/")
        shown = lambda d: len(d.find_elements(By.CSS_SELECTOR, "#examples img")) > args.example  # noqa: E731
        WebDriverWait(d, 60).until(shown)
        d.find_elements(By.CSS_SELECTOR, "#examples img")[args.example].click()
        d.find_element(By.CSS_SELECTOR, "[data-preset=left]").click()
        Select(d.find_element(By.ID, "method")).select_by_value("gvi")
        d.find_element(By.ID, "run").click()
        WebDriverWait(d, 120).until(lambda d: d.find_element(By.ID, "summary").text.startswith("gvi"))
        d.find_element(By.ID, "design").click()
        WebDriverWait(d, 60).until(lambda d: "best next glimpse" in d.find_element(By.ID, "message").text)
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        d.quit()
        server.should_exit = True
        shutil.rmtree(empty, ignore_errors=True)


if __name__ == "__main__":
    main()
