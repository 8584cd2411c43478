"""tools/semi_finetune_parts.py: each variant changes exactly the fine-tune fields it names."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import load_tool

from cutswap_lib.runs.semirest_tables import SemiRunSettings, semi_config


@pytest.fixture(scope="module")
def parts():
    return load_tool("semi_finetune_parts")


def test_the_known_variant_is_the_table_fine_tune(parts):
    table = dataclasses.replace(SemiRunSettings.small(), seeds=(3,))
    assert parts.variant_config("known", 3) == semi_config("mvtec", table, {})
    assert parts.run_settings(3) == table  # the same unsupervised model, the same seed


@pytest.mark.parametrize("dataset", ["mvtec", "btad"])
def test_each_variant_changes_exactly_its_fields(parts, dataset):
    full = dataclasses.asdict(parts.variant_config("known", 0, dataset))
    for name, spec in parts.VARIANTS.items():
        row = dataclasses.asdict(parts.variant_config(name, 0, dataset))
        changed = {k for k in full if full[k] != row[k]}
        assert changed == {k for k, v in spec.items() if full[k] != v}, name
        assert all(row[k] == v for k, v in spec.items()), name


def test_the_cli_refuses_a_folder_without_the_category(parts, tmp_path, capsys):
    assert parts.main(["--data-root", str(tmp_path), "--category", "nothing", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "semi_finetune_parts:" in err and str(tmp_path / "nothing") in err and "train/" in err
    assert not (tmp_path / "w").exists()  # nothing trained, nothing written
    (tmp_path / "cat" / "train").mkdir(parents=True)
    (tmp_path / "cat" / "test").mkdir()
    assert parts.main(["--data-root", str(tmp_path), "--category", "cat", "--upsilon", "1", "--work",
                       str(tmp_path / "w")]) == 2
    assert "upsilon" in capsys.readouterr().err and not (tmp_path / "w").exists()
    with pytest.raises(SystemExit) as exit_:
        parts.main(["--data-root", str(tmp_path), "--category", "x", "--variants", "pivot-none"])
    assert exit_.value.code == 2


def test_all_variants_fine_tune_in_one_run_from_the_same_work_folder(parts, tmp_path, monkeypatch, capsys):
    """The wiring: one semi-only run for all variants (baselines once), the seed's work folder, each variant's spec."""
    (tmp_path / "cat" / "train").mkdir(parents=True)
    (tmp_path / "cat" / "test").mkdir()
    calls = []

    def fake_run(dataset, root, category, settings, *, setting_names, progress, checkpoints, semi_variants):
        calls.append((dataset, category, settings, setting_names, checkpoints, semi_variants))
        row = {"ap": 0.5, "pro": 0.9, "pixel_auroc": 0.99, "n_test": 7, "train_s": 12.0}
        return [{**row, "method": "patchcore", "variant": "paper"},
                {**row, "method": "semirest", "variant": "not fine-tuned"},
                *({**row, "method": "semirest", "variant": name} for name in semi_variants)]

    monkeypatch.setattr(parts, "run_semirest_category", fake_run)
    assert parts.main(["--data-root", str(tmp_path), "--category", "cat", "--seed", "4", "--work", str(tmp_path / "w"),
                       "--variants", "no-dropout", "pivot-box"]) == 0
    assert len(calls) == 1
    dataset, category, settings, setting_names, checkpoints, variants = calls[0]
    assert (dataset, category, setting_names, checkpoints) == ("mvtec", "cat", ("semi",), tmp_path / "w" / "seed4")
    assert settings == parts.run_settings(4) and settings.seeds == (4,)
    assert variants == {"no-dropout": (parts.START, {"dropout": 0.0}), "pivot-box": (parts.START, {"guess_pivot": "box"})}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("seed 4 patchcore") and "not fine-tuned" in lines[1]
    assert lines[2].startswith("seed 4 no-dropout") and "AP 0.500 PRO 0.900" in lines[2] and "12 s" in lines[2]
    assert lines[3].startswith("seed 4 pivot-box") and "in all" in lines[4]


def test_the_runner_refuses_a_bad_semi_variant_before_loading_anything(tmp_path):
    """run_semirest_category checks every semi variant first: nothing is read, nothing trained."""
    from cutswap_lib.runs.semirest_tables import run_semirest_category

    settings = dataclasses.replace(SemiRunSettings.small(), seeds=(0,))
    missing = tmp_path / "no-such-root"  # would raise a DatasetError if anything were loaded
    with pytest.raises(ValueError, match="starts from 'nothing'"):
        run_semirest_category("mvtec", missing, "cat", settings, setting_names=("semi",),
                              semi_variants={"x": ("nothing", {})})
    with pytest.raises(ValueError, match="semi variant 'y'.*no_such_field"):
        run_semirest_category("mvtec", missing, "cat", settings, setting_names=("semi",),
                              semi_variants={"y": ("square+PCF+bagging+kNN", {"no_such_field": 1})})
    with pytest.raises(ValueError, match="guess_pivot"):
        run_semirest_category("mvtec", missing, "cat", settings, setting_names=("semi",),
                              semi_variants={"z": ("square+PCF+bagging+kNN", {"guess_pivot": "middle"})})
