"""Every class of bad input tried against the CLI: what it is, the command, the exit code and the message.

tests/test_bad_input.py runs each case and checks it; `python tests/bad_inputs.py` runs them all and prints
docs/bad-input.md (the table of what a user actually sees), so the documented messages are the real ones.
Cases use the tiny dataset of tests/plugins/tiny_plugin.py, so none does real work.
"""
from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


@dataclass
class Case:
    what: str  # the input class, as the table shows it
    argv: Callable[[Path], list[str]]  # tmp folder -> argv after `ddbench`
    code: int
    message: str  # a part of the last stderr line (or of stdout for warnings)
    setup: Callable[[Path], None] = lambda tmp: None
    env: dict[str, str] = field(default_factory=dict)
    needs_no_gpu: bool = False


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _foreign_db(tmp: Path) -> None:
    with sqlite3.connect(tmp / "foreign.sqlite") as con:
        con.execute("CREATE TABLE users (id INTEGER)")


def _ok_db(tmp: Path) -> None:
    from ddbench.store.results import open_store

    open_store(tmp / "out" / "ddbench.sqlite")


def run(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--config", str(tmp / "plugins.toml"), "--out", str(tmp / "out"), "--dataset", "tiny",
                        *FAST, *[a.replace("TMP", str(tmp)) for a in extra]]


def bare(*extra: str) -> Callable[[Path], list[str]]:
    """`run` of the random method at IPC 1 on the tiny dataset, without the fast-protocol flags."""
    return lambda tmp: ["run", "--config", str(tmp / "plugins.toml"), "--out", str(tmp / "out"), "--dataset", "tiny",
                        "--method", "random", "--ipc", "1", "--no-progress", *extra]


def cmd(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [a.replace("TMP", str(tmp)) for a in args]


def compare(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["compare", "--config", str(tmp / "plugins.toml"), "--out", str(tmp / "out"), "--dataset", "tiny",
                        *FAST, *[a.replace("TMP", str(tmp)) for a in extra]]


def _base_folder(damage: str) -> Callable[[Path], None]:
    """A diffusers DiTPipeline-shaped folder under TMP/base (configs only) with one thing wrong."""
    def setup(tmp: Path) -> None:
        import json

        root = tmp / "base"
        for sub in ("transformer", "scheduler"):
            (root / sub).mkdir(parents=True)
        (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]}))
        name = "UNet2DConditionModel" if damage == "foreign" else "DiTTransformer2DModel"
        (root / "transformer" / "config.json").write_text(json.dumps(
            {"_class_name": name, "norm_type": "ada_norm_zero", "num_embeds_ada_norm": 1000, "in_channels": 4, "sample_size": 32}))
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "linear"}))
        if damage == "bin-weights":  # a pickled weight file (never read: refused from its name alone)
            (root / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")
    return setup


def _synset(ipc: int) -> Callable[[Path], None]:
    """TMP/set.pt: a stored synthetic set of `ipc` images of each of the tiny dataset's 3 classes (28 px, grey)."""
    def setup(tmp: Path) -> None:
        import torch

        from ddbench.api import SyntheticSet
        from ddbench.store.synsets import save_synset

        labels = torch.arange(3).repeat(ipc)
        save_synset(SyntheticSet(torch.zeros(len(labels), 1, 28, 28), labels), tmp / "set.pt")
    return setup


CORRUPT = b"not SQLite, just text someone pointed --db at\n" * 40

CASES: list[Case] = [
    # ---- run: names and numbers
    Case("unknown method", run("--method", "nope"), 2, "unknown method 'nope'; valid: "),
    Case("unknown dataset", run("--method", "random", "--dataset", "imagenet-1k"), 2, "unknown dataset 'imagenet-1k'; valid: "),
    Case("unknown protocol", run("--method", "random", "--protocol", "nope"), 2, "unknown protocol 'nope'; valid: "),
    Case("unknown model", run("--method", "random", "--model", "nope"), 2, "unknown model 'nope'; valid: "),
    Case("IPC zero", run("--method", "random", "--ipc", "0"), 2, "argument --ipc: 0 must be >= 1"),
    Case("IPC not a number", run("--method", "random", "--ipc", "ten"), 2, "argument --ipc: 'ten' is not an integer"),
    Case("IPC above the smallest class", run("--method", "random", "--ipc", "13"), 2,
         "--ipc 13 is larger than the 12 real training images of class 0"),
    Case("negative seed", run("--method", "random", "--seed", "-1"), 2, "--seed -1 is out of range; allowed: integers 0.."),
    Case("seed beyond 64 bits", run("--method", "random", "--seed", "99999999999999999999999"), 2,
         "--seed 99999999999999999999999 is out of range"),
    Case("negative budget", run("--method", "random", "--budget", "-5"), 2, "argument --budget: '-5' must be a positive"),
    Case("infinite budget", run("--method", "random", "--budget", "inf"), 2, "argument --budget: 'inf' must be a positive"),
    Case("budget for a fixed-IPC method", run("--method", "random", "--budget", "60"), 2,
         "method 'random' does not take a generation budget; methods that do: "),
    Case("unknown method setting", run("--method", "random", "--set", "chunk=3"), 2,
         "unknown setting 'chunk' for method random; allowed: "),
    Case("--set without =", run("--method", "random", "--set", "chunk"), 2, "--set 'chunk': expected key=value"),
    Case("--set with an empty key", run("--method", "random", "--set", "=3"), 2, "--set '=3': empty key"),
    Case("unknown protocol setting", run("--method", "random", "--set", "eval.epochz=3"), 2,
         "unknown setting 'epochz' for protocol fast"),
    Case("setting of the wrong type", run("--method", "random", "--set", "eval.batch_size=two"), 2,
         "batch_size='two' is not a valid int (default 256)"),
    Case("setting below its minimum", run("--method", "random", "--set", "eval.lr=-1"), 2, "lr='-1' is below the minimum 0.0"),
    Case("setting outside its choices", run("--method", "random", "--set", "eval.impl=gpu"), 2,
         "impl='gpu' is not allowed; choose one of fast, loop"),
    Case("NaN setting", run("--method", "random", "--set", "eval.lr=nan"), 2, "lr='nan' is not a valid float"),
    Case("base folder that does not exist", run("--method", "minmax-diffusion", "--set", "base=TMP/nowhere"), 2,
         "base='TMP/nowhere' is not allowed; give shipped, train or an existing local diffusers folder"),
    Case("base folder without weights", run("--method", "minmax-diffusion", "--set", "base=TMP/base"), 2,
         "no weights (diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin is missing)",
         setup=_base_folder("no-weights")),
    Case("base folder with pickled weights", run("--method", "minmax-diffusion", "--set", "base=TMP/base"), 2,
         "its weights are a pickle (diffusion_pytorch_model.bin), which ddbench does not read unless "
         "DDBENCH_ALLOW_BIN_WEIGHTS=1 is set", setup=_base_folder("bin-weights")),
    Case("base folder with a foreign config", run("--method", "minmax-diffusion", "--set", "base=TMP/base"), 2,
         "is a 'UNet2DConditionModel' config; expected one of DiTTransformer2DModel", setup=_base_folder("foreign")),
    Case("unknown preset", run("--method", "random", "--preset", "huge"), 2, "argument --preset: invalid choice: 'huge'"),
    Case("unknown device", run("--method", "random", "--device", "tpu"), 2, "argument --device: invalid choice: 'tpu'"),
    Case("CUDA without a GPU", run("--method", "random", "--device", "cuda"), 2,
         "--device cuda was asked for but no CUDA device is available", needs_no_gpu=True),
    Case("budget above the cap", run("--method", "random", "--budget", "1e300"), 2,
         "argument --budget: '1e300' is above the cap of 86400 s (a day)"),
    Case("budget planning more than max_ipc", run("--method", "minmax-diffusion", "--budget", "86400"), 2,
         "budget=86400s plans "),
    Case("--eval-epochs beside --set eval.epochs", run("--method", "random", "--set", "eval.epochs=abc"), 2,
         "--eval-epochs 1 and --set eval.epochs='abc' both set epochs; give one"),
    Case("unknown DSA group (checked before distilling)", run("--method", "random", "--set", "eval.dsa_strategy=bogus"),
         2, "unknown DSA augmentation 'bogus' in strategy 'bogus'"),
    Case("pilot_steps empty under the default policy", run("--method", "minmax-diffusion", "--set", "pilot_steps="), 2,
         "pilot_steps=() is not allowed; give at least two step counts"),
    Case("empty --out", run("--method", "random", "--out", ""), 2, "--out '' is empty; give a results folder"),
    Case("warm start from a missing file", run("--method", "dm", "--ipc", "1", "--set", "init=TMP/nope.pt"), 2,
         "init='TMP/nope.pt': no such file; give real, noise, a stored synthetic set"),
    Case("warm start from an unknown run", run("--method", "dm", "--ipc", "1", "--set", "init=run:nope"), 2,
         "init='run:nope': no run 'nope' in"),
    Case("warm start from a set of another IPC", run("--method", "mtt", "--ipc", "1", "--set", "pix_init=TMP/set.pt"), 2,
         "pix_init='TMP/set.pt': images per class [2, 2, 2]; this run's --ipc is 1", setup=_synset(2)),
    Case("warm start from run: with no id", run("--method", "dm", "--ipc", "1", "--set", "init=run:"), 2,
         "init='run:' names no run; give run:RUN_ID"),
    Case("refine with an unknown objective", run("--method", "minmax-diffusion", "--set", "refine=nope"), 2,
         "refine='nope' is not allowed; choose one of none, dc, dm, dsa-gm"),
    Case("refine_settings item that is not KEY=VALUE",
         run("--method", "minmax-diffusion", "--set", "refine=dm", "--set", "refine_settings=batch_real"), 2,
         "refine_settings item 'batch_real' is not allowed; give KEY=VALUE pairs"),
    Case("refine_settings key the objective does not have",
         run("--method", "minmax-diffusion", "--set", "refine=dm", "--set", "refine_settings=nope=3"), 2,
         "unknown setting 'nope' for objective dm"),
    Case("refine_lr beside refine_settings lr=",
         run("--method", "minmax-diffusion", "--set", "refine=dm", "--set", "refine_lr=0.5", "--set",
             "refine_settings=lr=0.1"), 2, "refine_lr and refine_settings=lr=... both set the lr; give one"),
    Case("gradient-matching refine at an IPC get_loops lacks",
         run("--method", "minmax-diffusion", "--ipc", "2", "--set", "refine=dsa-gm"), 2,
         "the dsa-gm objective has no loops for 2 images per class"),
    # ---- run: files
    Case("missing --config", run("--method", "random", "--config", "TMP/nope.toml"), 2, "config file"),
    Case("malformed plugins.toml", run("--method", "random", "--config", "TMP/bad.toml"), 2, "malformed TOML",
         _write("bad.toml", "[methods.random]\nfoo = \n")),
    Case("binary plugins.toml", run("--method", "random", "--config", "TMP/bin.toml"), 2, "not a text file",
         _write("bin.toml", b"\x00\xff\xfe\x00")),
    Case("unknown plugins.toml section", run("--method", "random", "--config", "TMP/sec.toml"), 2,
         "unknown section [plugin]; allowed: methods, plugins, protocols", _write("sec.toml", "[plugin]\n")),
    Case("plugins list that is not a list", run("--method", "random", "--config", "TMP/lst.toml"), 2,
         "plugins.enabled must be a list of strings", _write("lst.toml", '[plugins]\nenabled = "random"\n')),
    Case("bad value in plugins.toml", run("--method", "random", "--config", "TMP/val.toml"), 2,
         "[protocols.fast]); allowed: ", _write("val.toml", '[plugins]\nmodules = ["tiny_plugin"]\n[protocols.fast]\nepochz = 3\n')),
    Case("bad value in plugins.toml, in run", run("--method", "random", "--config", "TMP/bv.toml"), 2,
         "epochs=-3 is below the minimum 0 (from TMP/bv.toml (--config) [protocols.fast])",
         _write("bv.toml", '[plugins]\nmodules = ["tiny_plugin"]\n[protocols.fast]\nepochs = -3\n')),
    Case("--db is a folder", run("--method", "random", "--db", "TMP"), 2, "is a folder; give a file such as"),
    Case("--db under a file", run("--method", "random", "--db", "TMP/afile/db.sqlite"), 2, "cannot create its folder",
         _write("afile", "x")),
    Case("--db corrupt", run("--method", "random", "--db", "TMP/c.sqlite"), 2, "is not a ddbench results database",
         _write("c.sqlite", CORRUPT)),
    Case("--db another application's SQLite", run("--method", "random", "--db", "TMP/foreign.sqlite"), 2,
         "is an SQLite database of another application (tables: users)", _foreign_db),
    Case("--out is a file", run("--method", "random", "--out", "TMP/afile"), 2, "--out TMP/afile: cannot write there",
         _write("afile", "x")),
    Case("--data-root empty", cmd("run", "--method", "random", "--data-root", "TMP/empty", "--out", "TMP/out", *FAST), 2,
         "fashion-mnist not found", lambda tmp: (tmp / "empty").mkdir()),
    # ---- run: a method's broken output is the method's failure (recorded, exit 1)
    Case("method returns extra images per class", run("--method", "bad-extra", "--ipc", "1"), 1,
         "method 'bad-extra' broke the IPC contract"),
    Case("method returns NaN images", run("--method", "bad-nan", "--ipc", "1"), 1,
         "method 'bad-nan' returned 1 image(s) containing NaN or inf"),
    Case("method returns the wrong image size", run("--method", "bad-size", "--ipc", "1"), 1,
         "method 'bad-size' returned images of shape (1, 20, 20)"),
    Case("method returns out-of-range labels", run("--method", "bad-labels", "--ipc", "1"), 1,
         "method 'bad-labels' returned labels 1..3"),
    Case("method raises", run("--method", "failing", "--ipc", "1"), 1, "RuntimeError: boom from the failing test method"),
    Case("method's validate() has a bug", run("--method", "crash-validate", "--ipc", "1"), 1,
         "method 'crash-validate' (plugin 'tiny_plugin') crashed in validate(): AttributeError: "),
    # ---- run: a plugin that misbehaves is named, its run recorded as failed (exit 1), never exit 0 or 2
    Case("protocol returns NaN", bare("--protocol", "nan-protocol"), 1,
         "protocol 'nan-protocol' returned the accuracy nan; allowed: a finite percentage in [0, 100]"),
    Case("protocol returns no accuracy", bare("--protocol", "empty-protocol"), 1,
         "protocol 'empty-protocol' returned accuracies=[]; expected a non-empty list of percentages"),
    Case("protocol returns accuracies out of range", bare("--protocol", "range-protocol"), 1,
         "protocol 'range-protocol' returned the accuracy 150.0"),
    Case("protocol calls sys.exit(0)", bare("--protocol", "exit-protocol"), 1,
         "protocol 'exit-protocol' (plugin 'hostile_plugin') called sys.exit(0) in evaluate()"),
    Case("method calls sys.exit(0)", run("--method", "exit-method", "--ipc", "1"), 1,
         "method 'exit-method' (plugin 'hostile_plugin') called sys.exit(0) in distill()"),
    Case("method calls os._exit(0)", run("--method", "os-exit-method", "--ipc", "1"), 1,
         "method 'os-exit-method' (plugin 'exit_plugin') called os._exit(0) in distill()"),
    Case("protocol calls os._exit(0)", bare("--protocol", "os-exit-protocol"), 1,
         "protocol 'os-exit-protocol' (plugin 'exit_plugin') called os._exit(0) in evaluate()"),
    Case("minmax selector naming none, pool 1", run("--method", "minmax-diffusion", "--ipc", "1", "--no-eval",
                                                    "--set", "selector=nosuch"), 2, "unknown selector 'nosuch'"),
    Case("method raises KeyboardInterrupt itself", run("--method", "interrupt-method", "--ipc", "1"), 1,
         "method 'interrupt-method' (plugin 'hostile_plugin') raised KeyboardInterrupt in distill() without a Ctrl-C"),
    Case("method refuses after work began", run("--method", "refuse-method", "--ipc", "1"), 1,
         "method 'refuse-method' (plugin 'hostile_plugin') refused in distill(), after work had begun: "),
    Case("dataset loader returns None", run("--method", "random", "--ipc", "1", "--dataset", "none-data"), 1,
         "dataset 'none-data' (plugin 'hostile_plugin') is broken: loader returned NoneType"),
    Case("dataset label >= num_classes", run("--method", "random", "--ipc", "1", "--dataset", "big-label-data"), 1,
         "dataset 'big-label-data' (plugin 'hostile_plugin') is broken: loader returned train labels 0..3"),
    Case("dataset with an empty test set", run("--method", "random", "--ipc", "1", "--dataset", "no-test-data"), 1,
         "dataset 'no-test-data' (plugin 'hostile_plugin') is broken: loader returned an empty test set"),
    # ---- show / report
    Case("show an unknown run", cmd("show", "nosuch", "--out", "TMP/out"), 2, "no run 'nosuch' in", _ok_db),
    Case("show with SQL wildcards", cmd("show", "%", "--out", "TMP/out"), 2, "no run '%' in", _ok_db),
    Case("show without a database", cmd("show", "x", "--out", "TMP/none"), 2, "no results database at"),
    Case("show on a corrupt database", cmd("show", "x", "--db", "TMP/c.sqlite"), 2, "is not a ddbench results database",
         _write("c.sqlite", CORRUPT)),
    Case("report without a database", cmd("report", "--out", "TMP/none"), 2, "no results database at"),
    Case("report on a corrupt database", cmd("report", "--db", "TMP/c.sqlite"), 2, "is not a ddbench results database",
         _write("c.sqlite", CORRUPT)),
    Case("report --methods naming no run", cmd("report", "--out", "TMP/out", "--methods", "nosuch"), 2,
         "--methods: no runs of 'nosuch' in", _ok_db),
    Case("report --reference naming no run", cmd("report", "--out", "TMP/out", "--reference", "nosuch"), 2,
         "--reference: no runs of 'nosuch' in", _ok_db),
    Case("report --dataset naming no run", cmd("report", "--out", "TMP/out", "--dataset", "nosuch"), 2,
         "--dataset: no runs on 'nosuch' in", _ok_db),
    Case("show an empty run id", cmd("show", "", "--out", "TMP/out"), 2, "run id '' is empty", _ok_db),
    Case("bad value in plugins.toml, listed", cmd("list", "--params", "--config", "TMP/v.toml"), 2,
         "epochs='abc' is not a valid int (default 300) (from TMP/v.toml (--config) [protocols.fast])",
         _write("v.toml", '[protocols.fast]\nepochs = "abc"\n')),
    Case("report into a file", cmd("report", "--out", "TMP/out", "--report", "TMP/afile"), 2,
         "--report TMP/afile: cannot write there", lambda tmp: (_ok_db(tmp), _write("afile", "x")(tmp))),
    # ---- compare
    Case("compare: unknown methods", compare("--methods", "random,nope,alsonope"), 2,
         "unknown methods 'nope', 'alsonope' in --methods; valid: "),
    Case("compare: empty list entry", compare("--methods", "random", "--ipc", "1,,2"), 2,
         "--ipc '1,,2': expected a comma-separated list without empty entries"),
    Case("compare: seeds not a number", compare("--methods", "random", "--seeds", "zero"), 2, "--seeds 'zero'"),
    Case("compare: zero jobs", compare("--methods", "random", "--jobs", "0"), 2, "--jobs 0 must be >= 1"),
    Case("compare: unknown launcher", compare("--methods", "random", "--launcher", "moon"), 2, "unknown launcher 'moon'"),
    Case("compare: unknown launcher setting", compare("--methods", "random", "--launcher-set", "color=red"), 2,
         "unknown setting 'color' for launcher local"),
    Case("compare: negative budget", compare("--methods", "random", "--budgets", "10,-1"), 2,
         "--budgets '10,-1': '-1' must be a positive"),
    Case("compare: reference not compared", compare("--methods", "random", "--reference", "failing"), 2,
         "--reference 'failing' is not one of --methods: random"),
    Case("compare: a cell the method refuses", compare("--methods", "random", "--ipc", "1,6001"), 2,
         "cell random ipc=6001 seed=0: --ipc 6001 is larger than"),
    Case("compare --dry-run: a cell the method refuses", compare("--methods", "random", "--ipc", "6001", "--dry-run"), 2,
         "Nothing was run"),
    Case("compare: --db is a folder", compare("--methods", "random", "--ipc", "1", "--db", "TMP"), 2, "is a folder"),
    Case("compare: --report into a file", compare("--methods", "random", "--ipc", "1", "--report", "TMP/afile"), 2,
         "--report TMP/afile: cannot write there", _write("afile", "x")),
    # ---- plugins
    Case("DDBENCH_LOAD_PLUGINS naming no plugin", cmd("list"), 0,
         "warning: DDBENCH_LOAD_PLUGINS names 'nosuch', which is no plugin", env={"DDBENCH_LOAD_PLUGINS": "random,nosuch"}),
    Case("a typo in a plugins.toml table", cmd("list", "--config", "TMP/typo.toml"), 0,
         "[methods.DM] names no loaded method; did you mean 'dm'?", _write("typo.toml", "[methods.DM]\niterations = 1\n")),
    Case("a plugin module that does not import", cmd("plugins", "--config", "TMP/mod.toml"), 0,
         "REFUSED: ModuleNotFoundError: No module named 'no_such_plugin_module'",
         _write("mod.toml", '[plugins]\nmodules = ["no_such_plugin_module"]\n')),
]


def prepare(tmp: Path) -> None:
    (tmp / "plugins.toml").write_text('[plugins]\nmodules = ["tiny_plugin", "hostile_plugin", "exit_plugin"]\n')


def run_case(case: Case, tmp: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the case, run in this process."""
    from ddbench.cli import main
    from ddbench.run.resolve import _cached_registry

    prepare(tmp)
    case.setup(tmp)
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    _cached_registry.cache_clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(case.argv(tmp))
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _cached_registry.cache_clear()
    return code, out.getvalue(), err.getvalue()


def shown(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "TMP")


def main() -> None:
    import tempfile

    import torch

    sys.path[:0] = [str(HERE), str(HERE / "plugins")]
    print("| input | command (after `ddbench`) | exit | message |")
    print("|---|---|---:|---|")
    for case in CASES:
        if case.needs_no_gpu and torch.cuda.is_available():
            continue
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            code, out, err = run_case(case, tmp)
            lines = [l for l in (err + out).splitlines() if case.message.replace("TMP", str(tmp)) in l] or \
                    (err.strip().splitlines() or ["(no message)"])[-1:]
            argv = " ".join(case.argv(tmp))
            argv = argv.replace(f"--config {tmp}/plugins.toml ", "").replace(" ".join(FAST), "…")
            msg = shown(lines[0], tmp).replace("|", "\\|")
            print(f"| {case.what} | `{shown(argv, tmp)}` | {code} | {msg} |")


if __name__ == "__main__":
    main()
