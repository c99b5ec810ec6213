"""Build hook (the rest of the build is declared in pyproject.toml).

The CPU presets live in the repository's top-level plugins.toml, where users read and edit them; a wheel or
`pip install .` carries a copy as ddbench/plugins.toml, so a non-editable install keeps the minute-long
defaults the README promises instead of silently falling back to the papers' hours-long settings.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = "plugins.toml"


class BuildPyWithPresets(build_py):
    """build_py, then copy the top-level plugins.toml into the built `ddbench` package."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / PRESETS
        if not source.is_file():
            raise FileNotFoundError(f"{source}: the presets file the package must carry is missing")
        target = Path(self.build_lib) / "ddbench" / PRESETS
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithPresets})
