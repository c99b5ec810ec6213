"""The helpers a plugin may use besides the contracts of `ddbench.api`, one import path per name:
`from ddbench.helpers import atomic_save, generator, load_tensors`.

Each name is the host's own object, taken from the module that defines it on first use (module `__getattr__`),
so importing this module loads nothing: a command plugin imports it under `ddbench --help`, which must stay
torch-free. `__all__` is the whole surface; tests/test_layers.py holds every bundled plugin to `ddbench.api`'s
names and these, and docs/plugins.md#what-a-plugin-may-import says what each is for.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module of ddbench that defines it, grouped by job
_HOMES: dict[str, str] = {
    # writing results and caches atomically
    **dict.fromkeys(("atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save", "missing_dirs",
                     "remove_empty"), "core.atomic"),
    # seeded generators on keyed streams
    **dict.fromkeys(("generator", "derive_seed", "seeded"), "core.seeds"),
    # the stopping rule of a loop under --budget
    **dict.fromkeys(("Deadline", "BUDGET_SAFETY"), "core.deadline"),
    # the config hash, the dataset fingerprint, a file's sha256 (cache keys)
    **dict.fromkeys(("config_hash", "dataset_fingerprint", "file_sha256"), "store.identity"),
    # the one reader of .pt files: tensors and plain containers only
    **dict.fromkeys(("load_tensors", "UnsafeFile", "drop_refused"), "core.safeload"),
    # calling another plugin's object so that its fault names its plugin
    **dict.fromkeys(("call_plugin", "owned_label"), "host.guard"),
    # DSA augmentation and ZCA whitening, shared by methods and protocols
    **dict.fromkeys(("DSA", "DSAParams", "DEFAULT_STRATEGY", "check_strategy"), "host.augment"),
    **dict.fromkeys(("fit_zca", "whiten_dataset"), "host.zca"),
    # the real-data reference classifier, feature spaces of a pool, and selecting from a pool
    **dict.fromkeys(("reference_classifier", "shipped_path", "frechet_distance", "ReferenceClassifier"),
                    "host.classifier"),
    **dict.fromkeys(("SPACES", "check_space", "training_features", "select_pool"), "host.features"),
    # launchers: a job run in a worker, and the row of one that could not run
    **dict.fromkeys(("run_job", "failed_record"), "run.sweeps"),
    # commands: the shared run flags, the loaded configuration and plugins, a run from flags
    **dict.fromkeys(("add_common_run_args", "load", "request_from_args", "print_summary"), "commands.clikit"),
    **dict.fromkeys(("RunRequest", "resolve", "execute", "load_dataset"), "run.runner"),
    # reading the results database (also for methods that start from a recorded run)
    **dict.fromkeys(("query", "find_ok", "get_run"), "store.results"),
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; the helpers are: {', '.join(__all__)}")
    value = getattr(importlib.import_module(f"{__package__}.{home}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and readers of the import graph; at run time each name comes lazily
    from .commands.clikit import add_common_run_args, load, print_summary, request_from_args
    from .core.atomic import atomic_save, atomic_write, atomic_write_json, atomic_write_text, missing_dirs, remove_empty
    from .core.deadline import BUDGET_SAFETY, Deadline
    from .core.safeload import UnsafeFile, drop_refused, load_tensors
    from .core.seeds import derive_seed, generator, seeded
    from .host.augment import DEFAULT_STRATEGY, DSA, DSAParams, check_strategy
    from .host.classifier import ReferenceClassifier, frechet_distance, reference_classifier, shipped_path
    from .host.features import SPACES, check_space, select_pool, training_features
    from .host.guard import call_plugin, owned_label
    from .host.zca import fit_zca, whiten_dataset
    from .run.runner import RunRequest, execute, load_dataset, resolve
    from .run.sweeps import failed_record, run_job
    from .store.identity import config_hash, dataset_fingerprint, file_sha256
    from .store.results import find_ok, get_run, query
