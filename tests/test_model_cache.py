"""The model cache (cutswap_lib.runs.model_cache): a trained model is stored once, loaded after, never reused stale."""

import warnings

import pytest
import torch

from cutswap_lib.data import load_foregrounds, load_split
from cutswap_lib.runs.model_cache import cached_model, fit_semirest_cached
from cutswap_lib.semirest import ResidualMemory, SemiREST, SemiRESTConfig


# --------------------------------------------------------------------------- the general mechanism
def test_second_call_loads_without_training(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.arange(3.0), "history": [{"loss": 0.5, "acc": float("nan")}], "name": "x"}

    first = cached_model(("config", 1, torch.ones(2)), train, name="toy", root=tmp_path)
    restored = []
    second = cached_model(("config", 1, torch.ones(2)), train, restored.append, name="toy", root=tmp_path)
    assert calls == [1] and not first.loaded and second.loaded and second.path == first.path
    assert first.path.parent == tmp_path / "toy" and first.path.name == f"{first.key}.pt"
    torch.testing.assert_close(restored[0]["w"], torch.arange(3.0))
    assert restored[0]["name"] == "x" and restored[0]["history"][0]["loss"] == 0.5
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically: no temporary file left


def test_other_key_parts_train_again(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.zeros(1)}

    a = cached_model(("config", 1, torch.ones(2)), train, root=tmp_path)
    b = cached_model(("config", 2, torch.ones(2)), train, root=tmp_path)  # another setting
    c = cached_model(("config", 1, torch.tensor([1.0, 1.5])), train, root=tmp_path)  # other data
    assert len(calls) == 3 and len({a.path, b.path, c.path}) == 3 and not (b.loaded or c.loaded)


def test_corrupt_or_foreign_file_is_retrained_with_a_warning(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.ones(1)}

    first = cached_model(("k",), train, root=tmp_path)
    first.path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="not used"):
        again = cached_model(("k",), train, root=tmp_path)
    assert len(calls) == 2 and not again.loaded
    assert cached_model(("k",), train, root=tmp_path).loaded  # the replaced file is good

    # a readable file under the right name that holds another key: foreign, never used
    other = cached_model(("other",), train, root=tmp_path)
    first.path.write_bytes(other.path.read_bytes())
    with pytest.warns(UserWarning, match="another key"):
        assert not cached_model(("k",), train, root=tmp_path).loaded

    # a restore that rejects the state counts as unusable too
    def reject(state):
        raise KeyError("swin")

    with pytest.warns(UserWarning, match="KeyError"):
        assert not cached_model(("k",), train, reject, root=tmp_path).loaded
    assert len(calls) == 5


# --------------------------------------------------------------------------- SemiREST through the cache
def _config(**kw):
    return SemiRESTConfig.cpu(**{"mu": 8, "step": 4, "embed_dim": 16, "num_heads": 2, "window": 4,
                                 "iterations": 3, "synthetic_per_image": 1, "b1": 2, "b2": 2, **kw})


def _model(config):
    torch.manual_seed(0)  # the untrained resnet18 below is the same network every time
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    return SemiREST(memory, config, progress=False)


@pytest.fixture(scope="module")
def disc(toy_root):
    train, _, _, paths = load_split(toy_root, "disc", "train", 64)
    test = load_split(toy_root, "disc", "test", 64)[0]
    return train[:6], load_foregrounds(paths, 64)[:6], test[:3]


def test_semirest_loads_what_it_trained(disc, tmp_path, monkeypatch):
    train, fg, test = disc
    trained = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path)
    assert not trained.cache.loaded and len(trained.history) == 3
    after_training = torch.rand(4)  # the random state after fit ...

    fits = []
    monkeypatch.setattr(SemiREST, "fit", lambda self, *a, **k: fits.append(1))  # a spy: no training allowed
    loaded = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path)
    assert fits == [] and loaded.cache.loaded and loaded.cache.path == trained.cache.path
    torch.testing.assert_close(torch.rand(4), after_training)  # ... is the random state after a load
    assert repr(loaded.history) == repr(trained.history) and loaded.grid == trained.grid  # repr: NaN == NaN
    torch.testing.assert_close(loaded.memory.memory_bank, trained.memory.memory_bank)
    torch.testing.assert_close(loaded.pools["synthetic"].pcf, trained.pools["synthetic"].pcf)
    for a, b in zip(trained.predict(test), loaded.predict(test)):
        torch.testing.assert_close(a, b)  # the same model


def test_semirest_retrains_for_other_config_data_or_network(disc, tmp_path):
    train, fg, _ = disc
    base = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path)
    other_config = fit_semirest_cached(_model(_config(lr=1e-3)), train, fg, root=tmp_path)
    other_images = fit_semirest_cached(_model(_config()), train.flip(-1), fg.flip(-1), root=tmp_path)
    net = _model(_config())
    with torch.no_grad():
        next(net.memory.features.extractor.parameters()).add_(0.01)  # another feature network
    other_network = fit_semirest_cached(net, train, fg, root=tmp_path)
    assert not any(m.cache.loaded for m in (base, other_config, other_images, other_network))
    assert len({m.cache.path for m in (base, other_config, other_images, other_network)}) == 4


def test_semirest_corrupt_cache_is_retrained(disc, tmp_path):
    train, fg, _ = disc
    first = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path)
    first.cache.path.write_bytes(first.cache.path.read_bytes()[:1000])  # a truncated file
    with pytest.warns(UserWarning, match="training again"):
        again = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path)
    assert not again.cache.loaded and len(again.history) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_semirest_cached(_model(_config()), train, fg, root=tmp_path).cache.loaded


def test_semirest_without_stored_pools_rebuilds_them(disc, tmp_path):
    train, fg, test = disc
    trained = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path, keep_pools_gb=0)
    loaded = fit_semirest_cached(_model(_config()), train, fg, root=tmp_path, keep_pools_gb=0)
    assert loaded.cache.loaded
    torch.testing.assert_close(loaded.pools["normal"].neighbours, trained.pools["normal"].neighbours)
    for a, b in zip(trained.predict(test), loaded.predict(test)):
        torch.testing.assert_close(a, b)
