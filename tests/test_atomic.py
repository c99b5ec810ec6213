"""The one atomic-write helper: a file that exists is whole; a failed write leaves the old file and no temp."""
from __future__ import annotations

import pytest

from ddbench.core.atomic import atomic_save, atomic_write, atomic_write_text, writable_dir


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text("old", target)

    def half(tmp):
        tmp.write_text("half-writ")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_torch_objects_and_writable_dirs(tmp_path):
    import torch

    atomic_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt")["x"].tolist() == [1.0, 1.0]
    assert writable_dir(tmp_path / "new", "--out").is_dir() and not any((tmp_path / "new").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match=r"--out .*file: cannot write there"):
        writable_dir(tmp_path / "file", "--out")


def test_processes_probing_one_folder_at_once_all_find_it_writable(tmp_path):
    # pool workers of one sweep check the same --out at the same moment; each must see it writable
    import concurrent.futures

    from ddbench.core.atomic import writable_dir

    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        done = list(pool.map(writable_dir, [tmp_path / "out"] * 200, ["--out"] * 200))
    assert done == [tmp_path / "out"] * 200 and list((tmp_path / "out").iterdir()) == []
