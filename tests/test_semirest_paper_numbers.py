"""The SemiREST paper's numbers: complete, in fractions, and consistent with their means."""

import math

import pytest

from cutswap_lib.data import DATASETS
from cutswap_lib.runs import semirest_paper as P

MVTEC_TABLES = {"unsupervised": P.MVTEC_UNSUPERVISED, "patchcore": P.MVTEC_PATCHCORE,
                "supervised": P.MVTEC_SUPERVISED, "semi": P.MVTEC_SEMI}

# /work/shared/PAPER-NOTES.md, "Reference figures" of SemiREST (percent / 100).
NOTES_MEANS = {
    ("mvtec", "unsupervised", "semirest"): (0.812, 0.975, 0.993),
    ("mvtec", "unsupervised", "patchcore"): (0.571, 0.931, 0.981),
    ("mvtec", "supervised", "semirest"): (0.844, 0.981, 0.995),
    ("mvtec", "semi", "semirest"): (0.838, 0.981, 0.995),
    ("btad", "unsupervised", "semirest"): (0.555, 0.814, 0.979),
    ("ksdd2", "unsupervised", "semirest"): (0.728, 0.981, 0.994),
}
ROUNDING = 0.006  # means of values printed to 0.1 % against a mean printed to 0.1 %


def all_triples():
    for name, table in MVTEC_TABLES.items():
        for cat, t in table.items():
            yield f"mvtec/{name}/{cat}", t
    for setting, table in P.BTAD.items():
        for cat, t in table.items():
            yield f"btad/{setting}/{cat}", t
    for cat, t in P.BTAD_PATCHCORE.items():
        yield f"btad/patchcore/{cat}", t
    for setting, t in P.KSDD2.items():
        yield f"ksdd2/{setting}", t
    yield "ksdd2/patchcore", P.KSDD2_PATCHCORE
    for group, table in P.MVTEC_GROUP_MEANS.items():
        for name, t in table.items():
            yield f"mvtec/{group}/{name}-average", t
    for i, row in enumerate(P.ABLATION):
        for setting in P.SETTINGS:
            if row[setting] is not None:
                yield f"ablation/{i}/{setting}", row[setting]


def assert_close(a, b, tol=1e-9):
    assert len(a) == len(b) == 3
    assert all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b)), (a, b)


def mean_of(table, cats):
    return tuple(sum(table[c][i] for c in cats) / len(cats) for i in range(3))


@pytest.mark.parametrize("name", list(MVTEC_TABLES))
def test_every_mvtec_category_present(name):
    cats = set(DATASETS["mvtec"].categories)
    assert set(MVTEC_TABLES[name]) == cats | {"mean"}
    assert set(P.MVTEC_TEXTURES) | set(P.MVTEC_OBJECTS) == cats
    assert not set(P.MVTEC_TEXTURES) & set(P.MVTEC_OBJECTS)


def test_btad_and_ksdd2_categories_match_the_registry():
    for setting in P.SETTINGS:
        assert set(P.BTAD[setting]) == set(DATASETS["btad"].categories) | {"mean"}
    assert set(P.KSDD2) == set(P.SETTINGS)
    (only,) = DATASETS["ksdd2"].categories
    assert P.paper_triple("ksdd2", "unsupervised", only) == P.KSDD2["unsupervised"]


def test_all_values_are_fractions():
    n = 0
    for where, t in all_triples():
        assert isinstance(t, tuple) and len(t) == 3, where
        for v in t:
            if v is not None:
                assert 0.0 <= v <= 1.0, (where, t)
                n += 1
    assert n > 300


@pytest.mark.parametrize("key", list(NOTES_MEANS))
def test_means_equal_paper_notes(key):
    dataset, setting, method = key
    cat = "ksdd2" if dataset == "ksdd2" else "mean"
    assert_close(P.paper_triple(dataset, setting, cat, method=method), NOTES_MEANS[key])


@pytest.mark.parametrize("name", list(MVTEC_TABLES))
def test_mvtec_mean_rows_match_per_category_means(name):
    table = MVTEC_TABLES[name]
    cats = DATASETS["mvtec"].categories
    assert_close(mean_of(table, cats), table["mean"], tol=ROUNDING)
    group = P.MVTEC_GROUP_MEANS[name]
    assert_close(mean_of(table, P.MVTEC_TEXTURES), group["texture"], tol=ROUNDING)
    assert_close(mean_of(table, P.MVTEC_OBJECTS), group["object"], tol=ROUNDING)


@pytest.mark.parametrize("name", list(P.BTAD) + ["patchcore"])
def test_btad_mean_rows_match_per_category_means(name):
    table = P.BTAD_PATCHCORE if name == "patchcore" else P.BTAD[name]
    assert_close(mean_of(table, DATASETS["btad"].categories), table["mean"], tol=ROUNDING)


def test_spot_values_in_fractions():
    assert P.MVTEC_UNSUPERVISED["carpet"] == (0.842, 0.987, 0.996)
    assert P.MVTEC_PATCHCORE["metal_nut"] == (0.869, 0.94, 0.983)
    assert P.MVTEC_SUPERVISED["screw"] == (0.721, 0.988, 0.998)
    assert P.MVTEC_SEMI["grid"] == (0.715, 0.985, 0.997)
    assert P.BTAD["semi"]["02"] == (0.812, 0.69, 0.979)
    assert P.KSDD2["supervised"] == (0.736, 0.967, 0.98)


def test_paper_triple_lookup():
    assert P.paper_triple("mvtec", "semi", "zipper") == P.MVTEC_SEMI["zipper"]
    assert P.paper_triple("btad", "supervised", "03") == P.BTAD["supervised"]["03"]
    assert P.paper_triple("ksdd2", "semi", "mean") == P.KSDD2["semi"]
    assert (P.paper_triple("btad", "unsupervised", "01", method="patchcore")
            == P.BTAD_PATCHCORE["01"])
    assert P.paper_triple("ksdd2", "unsupervised", "ksdd2", method="patchcore") == P.KSDD2_PATCHCORE


def test_paper_triple_none_for_unknown_cells():
    assert P.paper_triple("mvtec", "unsupervised", "candle") is None
    assert P.paper_triple("btad", "semi", "bottle") is None
    assert P.paper_triple("ksdd2", "supervised", "01") is None
    # PatchCore is only reported unsupervised
    assert P.paper_triple("mvtec", "supervised", "bottle", method="patchcore") is None
    assert P.paper_triple("btad", "semi", "mean", method="patchcore") is None


@pytest.mark.parametrize("args", [("visa", "unsupervised", "candle"), ("MVTec", "semi", "bottle"),
                                  ("mvtec", "fewshot", "bottle"), ("btad", "semi-supervised", "01"),
                                  ("ksdd2", "", "ksdd2")])
def test_paper_triple_rejects_unknown_names(args):
    with pytest.raises(ValueError):
        P.paper_triple(*args)
    with pytest.raises(ValueError):
        P.paper_triple("mvtec", "unsupervised", "bottle", method="draem")


def test_ablation_rows():
    rows = P.ABLATION
    assert len(rows) == 8
    keys = {"residual", "pcf", "bagging", "knn", "mixmatch", "dropout",
            "unsupervised", "supervised", "semi"}
    for row in rows:
        assert set(row) == keys
        assert row["residual"] in ("square", "abs")
        assert all(isinstance(row[m], bool)
                   for m in ("pcf", "bagging", "knn", "mixmatch", "dropout"))
        assert row["unsupervised"] is not None and row["supervised"] is not None

    def find(residual, **modules):
        flags = {m: modules.get(m, False) for m in ("pcf", "bagging", "knn", "mixmatch", "dropout")}
        (match,) = [r for r in rows if r["residual"] == residual
                    and all(r[m] == v for m, v in flags.items())]
        return match

    progression = [find("square"), find("square", pcf=True),
                   find("square", pcf=True, bagging=True),
                   find("square", pcf=True, bagging=True, knn=True)]
    assert [r["unsupervised"][0] for r in progression] == [0.705, 0.724, 0.793, 0.812]
    assert all(r["semi"] is None for r in progression[:3])
    full = find("square", pcf=True, bagging=True, knn=True, mixmatch=True, dropout=True)
    assert_close(full["unsupervised"], P.MVTEC_UNSUPERVISED["mean"])
    assert_close(full["semi"], P.MVTEC_SEMI["mean"])
    # Table 6 prints the supervised PRO as 98.2, Table 2 as 98.1: same AP and AUROC
    assert full["supervised"][0] == P.MVTEC_SUPERVISED["mean"][0]
    assert full["supervised"][2] == P.MVTEC_SUPERVISED["mean"][2]
    assert find("abs")["unsupervised"][0] == 0.693
    assert find("abs", pcf=True, bagging=True, knn=True, mixmatch=True,
                dropout=True)["supervised"][0] == 0.849


def test_annotation_seconds():
    assert P.ANNOTATION_SECONDS == {"box": 5, "block": 17, "pixel": 32}
    seconds = P.ANNOTATION_SECONDS
    assert seconds["box"] < seconds["block"] < seconds["pixel"]
