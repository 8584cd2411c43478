"""tools/split_by_kind.py: one MVTec-layout category per defect kind, byte-identical copies, clear refusals."""

from __future__ import annotations

import filecmp

import pytest
from conftest import load_tool

from cutswap_lib.data import load_split, make_toy_dataset


@pytest.fixture(scope="module")
def tool():
    return load_tool("split_by_kind")


@pytest.fixture()
def toy(tmp_path):
    make_toy_dataset(tmp_path / "data", "disc", n_train=3, n_test_good=2, n_test_defect=2, image_size=64, seed=0)
    return tmp_path / "data"


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_each_kind_gets_the_normal_images_and_only_its_own_defects(tool, toy, tmp_path, capsys):
    source = toy / "disc"
    kinds = sorted(p.name for p in (source / "test").iterdir() if p.is_dir() and p.name != "good")
    assert tool.main(["--root", str(toy), "--category", "disc", "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"disc_{k}" for k in kinds]
    for kind in kinds:
        target = tmp_path / "out" / f"disc_{kind}"
        assert sorted(p.name for p in (target / "test").iterdir()) == sorted(["good", kind])
        assert [p.name for p in (target / "ground_truth").iterdir()] == [kind]
        for part in ("train", "test/good", f"test/{kind}", f"ground_truth/{kind}"):
            assert same_tree(source / part, target / part), part
        images, masks, labels, paths = load_split(tmp_path / "out", f"disc_{kind}", "test", 64)
        assert int(labels.sum()) == 2 and all("/good/" in str(p) or f"/{kind}/" in str(p) for p in paths)
        assert float(masks[labels == 1].sum()) > 0
    assert len(capsys.readouterr().out.splitlines()) == len(kinds)


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tool, toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert tool.main(["--root", str(toy), "--category", "nope", "--out", str(out)]) == 2
    assert "no such category folder" in capsys.readouterr().err and not out.exists()
    (toy / "empty" / "train" / "good").mkdir(parents=True)
    (toy / "empty" / "test" / "good").mkdir(parents=True)
    assert tool.main(["--root", str(toy), "--category", "empty", "--out", str(out)]) == 2
    assert "nothing to split" in capsys.readouterr().err and not out.exists()
    kind = next(p.name for p in (toy / "disc" / "test").iterdir() if p.name != "good")
    (out / f"disc_{kind}").mkdir(parents=True)  # an earlier split: never overwritten
    assert tool.main(["--root", str(toy), "--category", "disc", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists already" in err and f"disc_{kind}" in err
    assert [p.name for p in out.iterdir()] == [f"disc_{kind}"] and not any((out / f"disc_{kind}").iterdir())
