"""SemiREST training checkpoints: an interrupted run resumes to the same model; foreign folders are refused."""

import dataclasses

import pytest
import torch

from cutswap_lib.data import load_foregrounds, load_split
from cutswap_lib.semirest import ResidualMemory, SemiREST, SemiRESTConfig
from cutswap_lib.semirest.checkpoints import state_path


def _config(**kw):  # fresh synthetic anomalies (no pool) and dropout on: every generator is used
    return SemiRESTConfig.cpu(**{"mu": 8, "step": 4, "embed_dim": 16, "num_heads": 2, "window": 4,
                                 "iterations": 6, "synthetic_per_image": None, "b1": 2, "b2": 2,
                                 "dropout_outside_semi": True, **kw})


@pytest.fixture(scope="module")
def disc(toy_root):
    train, _, _, paths = load_split(toy_root, "disc", "train", 64)
    return train[:6], load_foregrounds(paths[:6], 64)


def _model(config):
    torch.manual_seed(0)
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    return SemiREST(memory, config, progress=False)


def _weights(model):
    return {k: v.clone() for k, v in model.ema.state_dict().items()}


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(disc, tmp_path):
    train, fg = disc
    straight = _model(_config())
    straight.fit(train, foreground=fg)
    first = _model(_config())  # "disconnected" after 4 of 6 iterations: states at 2 and 4 on disk
    first.fit(train, foreground=fg, iterations=4, checkpoint_dir=tmp_path, checkpoint_every=2, fingerprint="d")
    assert sorted(p.name for p in tmp_path.glob("iteration_*.pt")) == ["iteration_000002.pt", "iteration_000004.pt"]
    resumed = _model(_config())  # a new session: prepare again, then continue from iteration 4
    history = resumed.fit(train, foreground=fg, checkpoint_dir=tmp_path, checkpoint_every=2, fingerprint="d")
    assert [h["iteration"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in straight.history])
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[key], value, msg=key)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    # and without the checkpoint (the weights differ after 4 vs 6 steps): the comparison can fail
    assert any(not torch.equal(a, b) for a, b in zip(first.model.parameters(), straight.model.parameters()))


def test_a_truncated_newest_state_is_skipped_and_foreign_folders_are_refused(disc, tmp_path):
    train, fg = disc
    _model(_config()).fit(train, foreground=fg, iterations=4, checkpoint_dir=tmp_path, checkpoint_every=2,
                          fingerprint="d")
    state_path(tmp_path, 4).write_bytes(b"cut off")  # an interrupted write
    with pytest.warns(UserWarning, match="iteration_000004"):
        history = _model(_config()).fit(train, foreground=fg, checkpoint_dir=tmp_path, checkpoint_every=2,
                                        fingerprint="d")
    assert len(history) == 6
    with pytest.raises(ValueError, match="other data"):
        _model(_config()).fit(train, foreground=fg, checkpoint_dir=tmp_path, fingerprint="other images")
    with pytest.raises(ValueError, match="another configuration"):
        _model(_config(lr=1e-3)).fit(train, foreground=fg, checkpoint_dir=tmp_path, fingerprint="d")
    with pytest.raises(ValueError, match="checkpoint_every"):
        _model(_config()).fit(train, foreground=fg, checkpoint_dir=tmp_path, checkpoint_every=0)


def test_config_round_trips_through_the_state(tmp_path):
    # the state's config must compare equal after torch.load(weights_only=True), or every resume would be refused
    from cutswap_lib.weights import load_checkpoint
    path = tmp_path / "c.pt"
    cfg = SemiRESTConfig()
    torch.save({"config": dataclasses.asdict(cfg)}, path)
    assert load_checkpoint(path)["config"] == dataclasses.asdict(cfg)


def test_states_are_written_by_count_at_the_end_and_by_the_clock(monkeypatch):
    """Every ``every`` iterations, at the last one, and once ``seconds`` have passed since the last write."""
    from cutswap_lib.semirest import checkpoints

    now = [0.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    schedule = checkpoints.SaveSchedule(every=200, seconds=300)
    due = []
    for it in range(1, 451):
        now[0] += 4.0  # a paper-size iteration on a T4 (the planner's estimate): 200 of them are 13 minutes
        if schedule.due(it, 450):
            due.append(it)
    assert due == [75, 150, 200, 275, 350, 400, 450]  # never more than 300 s (75 iterations) apart
    untimed = checkpoints.SaveSchedule(every=200, seconds=None)
    assert [it for it in range(1, 451) if untimed.due(it, 450)] == [200, 400, 450]
    with pytest.raises(ValueError, match="checkpoint_seconds"):
        checkpoints.SaveSchedule(every=2, seconds=0)
