"""benchmarks/check_identical.py, the before/after check of refactors: its comparison names
every array that changed by one bit, changed dtype or shape, or is missing, and passes equal
recordings."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import check_identical


def test_compare_names_each_array_that_differs(tmp_path, capsys):
    codes = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    before = {"mp/0/fit/codes": codes, "mp/0/fit/n_iter_": np.array(3), "mp/0/gone": codes}
    np.savez(tmp_path / "a.npz", **before)
    np.savez(tmp_path / "b.npz", **before)
    assert check_identical.compare(tmp_path / "a.npz", tmp_path / "b.npz") == 0
    assert "3 identical, 0 differ" in capsys.readouterr().out

    one_ulp = codes.copy()
    one_ulp[1, 2] = np.nextafter(one_ulp[1, 2], np.float32(2))
    after = {
        "mp/0/fit/codes": one_ulp,
        "mp/0/fit/n_iter_": np.array(3.0),  # same value, another dtype
        "mp/0/new": codes,
    }
    np.savez(tmp_path / "c.npz", **after)
    assert check_identical.compare(tmp_path / "a.npz", tmp_path / "c.npz") == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "differs: mp/0/gone",
        "differs: mp/0/new",
        "differs: mp/0/fit/codes",
        "differs: mp/0/fit/n_iter_",
        "0 identical, 4 differ",
    ]
