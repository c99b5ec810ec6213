"""The README's example third-party plugin: built from the README text, installed, run through the CLI."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_files() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))


def test_readme_plugin_installs_lists_and_runs(tmp_path):
    files = readme_files()
    assert set(files) == {"pyproject.toml", "ddbench_classmeans.py"}
    pkg = tmp_path / "ddbench-classmeans"
    pkg.mkdir()
    for name, body in files.items():
        (pkg / name).write_text(body)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(pkg)],
        check=True, capture_output=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "tests" / "plugins"), str(ROOT / "tests")]))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin"]\n')
    exe = shutil.which("ddbench", path=str(Path(sys.executable).parent)) or "ddbench"
    listed = subprocess.run([exe, "list", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"class-means\s+\[class-means\]", listed.stdout)
    ran = subprocess.run(
        [exe, "run", "--method", "class-means", "--ipc", "2", "--set", "chunk=3", "--dataset", "tiny", "--config", str(cfg),
         "--protocol", "fast", "--eval-epochs", "2", "--eval-models", "1", "--out", str(tmp_path / "out"), "--json",
         "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["method"] == "class-means" and result["images"] == 6 and result["status"] == "ok"
    assert result["versions"]["plugin:class-means"] == "0.1.0"
