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
    assert semi_config("mvtec", parts.variant_settings("known", 3), {}) == semi_config("mvtec", table, {})
    assert parts.variant_settings("known", 3).config == table.config  # the same unsupervised model


@pytest.mark.parametrize("dataset", ["mvtec", "btad"])
def test_each_variant_changes_exactly_its_fields(parts, dataset):
    full = dataclasses.asdict(semi_config(dataset, parts.variant_settings("known", 0, dataset), {}))
    for name, spec in parts.VARIANTS.items():
        settings = parts.variant_settings(name, 0, dataset)
        row = dataclasses.asdict(semi_config(dataset, settings, {}))
        changed = {k for k in full if full[k] != row[k]}
        assert changed == {k for k, v in spec.items() if full[k] != v}, name
        assert all(row[k] == v for k, v in spec.items()), name
        assert settings.config == SemiRunSettings.small().config  # the unsupervised model is untouched


def test_the_cli_refuses_a_folder_without_the_category(parts, tmp_path, capsys):
    assert parts.main(["--data-root", str(tmp_path), "--category", "nothing", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "semi_finetune_parts:" in err and str(tmp_path / "nothing") in err and "train/" in err
    assert not (tmp_path / "w").exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit) as exit_:
        parts.main(["--data-root", str(tmp_path), "--category", "x", "--variants", "pivot-none"])
    assert exit_.value.code == 2


def test_each_variant_fine_tunes_from_the_same_work_folder(parts, tmp_path, monkeypatch, capsys):
    """The wiring: one semi-only run per variant, one work folder per seed, the variant's settings."""
    (tmp_path / "cat" / "train").mkdir(parents=True)
    (tmp_path / "cat" / "test").mkdir()
    calls = []

    def fake_run(dataset, root, category, settings, *, setting_names, progress, checkpoints):
        calls.append((dataset, category, settings, setting_names, checkpoints))
        row = {"ap": 0.5, "pro": 0.9, "pixel_auroc": 0.99, "n_test": 7}
        return [{**row, "method": "patchcore", "variant": "paper"},
                {**row, "method": "semirest", "variant": "not fine-tuned"},
                {**row, "method": "semirest", "variant": "paper"}]

    monkeypatch.setattr(parts, "run_semirest_category", fake_run)
    assert parts.main(["--data-root", str(tmp_path), "--category", "cat", "--seed", "4", "--work", str(tmp_path / "w"),
                       "--variants", "no-dropout", "pivot-box"]) == 0
    assert [c[3] for c in calls] == [("semi",), ("semi",)]
    assert {c[4] for c in calls} == {tmp_path / "w" / "seed4"}
    assert [semi_config("mvtec", c[2], {}).dropout for c in calls] == [0.0, 0.25]
    assert [semi_config("mvtec", c[2], {}).guess_pivot for c in calls] == ["known", "box"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[2].startswith("seed 4 no-dropout") and "semirest fine-tuned" in lines[2]
    assert "semirest not fine-tuned" in lines[4] and "AP 0.500 PRO 0.900" in lines[5]
