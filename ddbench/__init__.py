"""ddbench: a dataset-distillation benchmark whose methods, datasets and protocols are plugins."""
import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

import pluggy

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("ddbench")

__all__ = ["hookimpl", "__version__"]

# Where each module of the flat ddbench/ of old now lives (issue 29: the layers as packages). A plugin written
# against an old path (docs/plugins.md#what-a-plugin-may-import) and a pickle naming one still import.
_MOVED: dict[str, str] = {old: package for package, olds in {
    "core": "errors atomic seeds records roles jobs tables stats safeload params generative selection",
    "store": "config identity results synsets shipped provenance row_checks",
    "host": "plugins guard output_checks augment zca classifier features",
    "run": "resolve runner sweeps",
    "analysis": "reference scores scores_text report_curves report_cells report_text report_plots report_gallery "
                "report report_html plots html_parts",
    "commands": "clikit core_commands compare report_command",
}.items() for old in olds.split()}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`ddbench.<old>` imports as the moved module itself: the import system returns what `sys.modules` holds
    after `exec_module`, so no stand-in exists whose names a static lookup (pluggy finds hooks with
    `inspect.getattr_static`) would miss; a stale install's entry point on an old path still registers."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        return importlib.util.spec_from_loader(fullname, self) if package == __name__ and name in _MOVED else None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__.rpartition(".")[2]
        sys.modules[module.__name__] = importlib.import_module(f"{__name__}.{_MOVED[name]}.{name}")


if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
    sys.meta_path.append(_OldPath())
