"""A normal (not editable) install carries the presets: build the wheel, install it into a fresh virtual
environment outside the checkout, and check `ddbench list --params` shows them and a tiny run works.

Installing torch afresh costs ~100 s and 5.5 GB, so the fresh environment sees this one's third-party packages
through a .pth line (which adds the folder only: the editable install's own .pth finder is not run), while
ddbench itself must come from the wheel: the test checks `ddbench.__file__` and the entry points' distribution.
"""
from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "plugins.toml", "ddbench", "baselines",
           "ddbench_minmax")


def _sh(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp / "dist"), str(src)], cwd=tmp)
    wheel = next((tmp / "dist").glob("ddbench-*.whl"))
    venv = tmp / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(_sh([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp)
                   .stdout.strip())
    ours = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (purelib / "zz_third_party.pth").write_text("\n".join(sorted(ours)) + "\n")  # after the venv's own packages
    _sh([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)], cwd=tmp)
    work = tmp / "work"  # outside the checkout, no plugins.toml here
    work.mkdir()
    return {"venv": venv, "python": python, "purelib": purelib, "work": work, "wheel": wheel}


def test_the_wheel_carries_the_presets_and_ddbench_comes_from_it(wheel_env):
    import zipfile

    assert "ddbench/plugins.toml" in zipfile.ZipFile(wheel_env["wheel"]).namelist()
    probe = ("import json, ddbench, importlib.metadata as md\n"
             "eps = [ep for ep in md.entry_points(group='ddbench')]\n"
             "print(json.dumps({'file': ddbench.__file__, 'dists': sorted({str(ep.dist._path) for ep in eps}),"
             " 'n': len(eps)}))")
    seen = json.loads(_sh([str(wheel_env["python"]), "-c", probe], cwd=wheel_env["work"]).stdout)
    assert seen["file"].startswith(str(wheel_env["purelib"])), seen  # not the checkout's editable ddbench
    assert seen["dists"] and all(d.startswith(str(wheel_env["purelib"])) for d in seen["dists"]), seen
    out = _sh([str(wheel_env["venv"] / "bin" / "ddbench"), "list", "--params"], cwd=wheel_env["work"]).stdout
    presets = str(wheel_env["purelib"] / "ddbench" / "plugins.toml")
    assert f"iterations = 150  [set by {presets} (packaged presets) [methods.dm.fashion-mnist]" in out, out
    assert f"finetune_steps = 200  [set by {presets} (packaged presets)" in out


def test_a_tiny_run_works_from_the_wheel(wheel_env):
    work = wheel_env["work"]
    (work / "plugins.toml").write_text('[plugins]\nmodules = ["tiny_plugin"]\n')
    shutil.copy2(TESTS / "plugins" / "tiny_plugin.py", work / "tiny_plugin.py")
    shutil.copy2(TESTS / "conftest.py", work / "conftest.py")  # tiny_plugin builds its data with it
    proc = _sh([str(wheel_env["venv"] / "bin" / "ddbench"), "run", "--method", "random", "--dataset", "tiny",
                "--ipc", "1", "--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress",
                "--out", str(work / "out"), "--json"], cwd=work)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["status"] == "ok" and rec["images"] == 3 and Path(rec["artifact"]).is_file()
