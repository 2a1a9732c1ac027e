"""`pip install .` (not editable) gives a working mall: the wheel carries the ops console
and the vendored docs assets (static/) and the message catalogs (locale/) inside the
package, and `mall serve` from a fresh venv, outside the source tree, serves /admin,
/docs and Chinese messages.

The wheel is built from a copy of the sources (setuptools writes build/ and *.egg-info
next to them) in an isolated build (setuptools from PyPI or pip's cache). The venv holds
only the wheel; the dependencies come from this interpreter's site-packages through a
.pth file, which adds plain folders and runs none of their .pth files, so an editable
`mall` installed here stays invisible there."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from mall import docs_ui
from mall.config import project_root
from mall.redis import EmbeddedRedis

pytestmark = pytest.mark.nodb

SOURCES = ("pyproject.toml", "README.md", "mall", "static", "locale")
BUILD_SECONDS = 120
START_SECONDS = 60
CJK = re.compile(r"[\u4e00-\u9fff]")


def _run(
    args: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = project_root() / name
        if path.is_dir():
            # links kept: mall/_static and mall/_locale point at ../static and ../locale
            shutil.copytree(path, src / name, symlinks=True, ignore=junk)
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir"]
    _run([*pip_wheel, str(dist), str(src)], BUILD_SECONDS, cwd=tmp)
    (wheel,) = dist.glob("mall-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    home = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    # pip runs against the new venv, which sees nothing yet: a clean, non-editable install
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    _run([*pip_install, "--no-deps", "--no-index", "-q", str(wheel)], BUILD_SECONDS)
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], 30
    )
    deps = [
        p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()
    ]
    (Path(purelib.strip()) / "_mall_test_deps.pth").write_text("\n".join(deps) + "\n")
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_wheel_in_a_fresh_venv_serves_console_docs_and_chinese(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for needed in (
        "mall/_static/admin/index.html",
        "mall/_static/admin/app.css",
        "mall/_static/admin/js/main.js",
        "mall/_static/vendor/swagger-ui-bundle.js",
        "mall/_static/vendor/redoc.standalone.js",
        "mall/_locale/zh_CN/LC_MESSAGES/core.po",
    ):
        assert needed in names, f"the wheel lacks {needed}"
    # the top-level folders stay in the source tree; nothing lands beside the package
    outside = {n.split("/")[0] for n in names} - {"mall"}
    assert all(n.endswith(".dist-info") for n in outside), outside

    home = _fresh_venv(tmp_path, wheel)
    run_dir = tmp_path / "run"  # not the checkout: nothing to find beside it
    run_dir.mkdir()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALL_", "PYTHON"))}
    env["MALL_DATA_DIR"] = str(data)
    where = _run(
        [str(home / "bin" / "python"), "-c", "import mall; print(mall.__file__)"],
        30,
        cwd=run_dir,
        env=env,
    )
    assert where.strip().startswith(str(home)), f"mall imported from {where}"

    port = _free_port()
    log = (tmp_path / "serve.log").open("w+")
    serve = [str(home / "bin" / "mall"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        serve, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + START_SECONDS
            while True:
                assert proc.poll() is None, f"mall serve exited:\n{output()}"
                assert time.monotonic() < deadline, f"mall serve not ready:\n{output()}"
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

            page = http.get("/admin")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert "/static/admin/js/main.js" in page.text
            assert http.get("/static/admin/js/main.js").status_code == 200
            assert http.get("/static/admin/app.css").status_code == 200

            # Chinese by default, English on request: the catalogs were found
            zh = http.get("/api/v1/me")
            assert zh.status_code == 401
            message = zh.json()["error"]["message"]
            assert CJK.search(message), message
            en = http.get("/api/v1/me", headers={"Accept-Language": "en"}).json()
            assert not CJK.search(en["error"]["message"]), en

            docs = http.get("/docs")
            assert docs.status_code == 200 and docs_ui.SWAGGER_JS in docs.text
            for asset in (docs_ui.SWAGGER_JS, docs_ui.SWAGGER_CSS, docs_ui.REDOC_JS):
                assert http.get(asset).status_code == 200, asset
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    # it stopped cleanly and took its embedded Redis with it
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()
    assert not EmbeddedRedis(data).running()
