"""The worker's post-swap guard (stream.worker.guard) through process_batch and the hot swapper: the new
version is shadow-scored against the one it replaced, and rolled back when it loses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.hail import HAIL, HailConfig
from models.trainer import fine_tune, make_windows
from models.vocab import ItemVocab
from stream.messages import ROLLBACK, ModelAnnouncement, parse_control
from stream.observe.metrics import Metrics
from stream.settings import Settings
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.guard import SwapGuard
from stream.worker.hotswap import HotSwapper
from stream.worker.recommender import LiveModel, OnlineRecommender
from tests.fakes import scrambling_fine_tune

ITEMS = [f"i{n}" for n in range(20)]
USERS = 30


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def good() -> LiveModel:
    """A model that learned the stream's rule: after i<n> comes i<n+1>."""
    torch.manual_seed(0)
    vocab = ItemVocab(ITEMS)
    model = HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=6, dropout=0.0), vocab.rows)
    seqs = [vocab.lookup([ITEMS[(s + j) % 20] for j in range(12)]) for s in range(20)]
    fine_tune(model, make_windows(seqs, 6), 300, lr=1e-2, batch_size=32, seed=0)
    model.eval()
    return LiveModel(model, vocab, "v1")


def _scrambled(live: LiveModel, version: str) -> LiveModel:
    model = HAIL(live.model.config, live.model.n_rows)
    model.load_state_dict(live.model.state_dict())
    scrambling_fine_tune(model)
    model.eval()
    return LiveModel(model, live.vocab, version)


def _events(n: int, start: int = 0) -> list[Source]:
    out = []
    for e in range(start, start + n):
        user, step = e % USERS, e // USERS
        item = ITEMS[(user + step) % 20]
        raw = json.dumps({"user_id": f"u{user}", "item_id": item, "ts": float(e)}).encode()
        out.append(Source(raw, "in", 0, e))
    return out


class Table(dict):
    def apply(self, result) -> None:
        for user, upd in result.updates.items():
            self[user] = upd.value


def _run(rec: OnlineRecommender, swapper: HotSwapper, table: Table, events: list[Source], settings: Settings):
    preq = new_prequential(settings.top_k)
    verdicts, messages = [], []
    for start in range(0, len(events), 50):
        result = process_batch(events[start:start + 50], table.get, rec, None, preq, settings, guard=swapper.guard)
        table.apply(result)
        if result.verdict is not None:
            verdicts.append((start + 50, result.verdict))
            msg = swapper.roll_back(result.verdict, source="test")
            if msg is not None:
                messages.append(parse_control(msg))
    return verdicts, messages


def _swap(swapper: HotSwapper, rec: OnlineRecommender, new: LiveModel) -> None:
    old = rec.swap(new.model, new.vocab, new.version)  # what HotSwapper.apply does after loading
    assert swapper.guard is not None
    swapper.guard.start(rec.live, old)


def test_a_worse_version_is_rolled_back_within_the_guard_window(good: LiveModel) -> None:
    settings = Settings(top_k=10)
    rec = OnlineRecommender(good.model, good.vocab, good.version)
    metrics = Metrics(process_collector=False)
    guard = SwapGuard(events=400, min_events=100)
    swapper = HotSwapper(rec, metrics, guard)
    table = Table()
    _run(rec, swapper, table, _events(300), settings)  # every user has a history and a prediction
    _swap(swapper, rec, _scrambled(good, "v2"))
    verdicts, messages = _run(rec, swapper, table, _events(1200, start=300), settings)

    assert [v.action for _, v in verdicts] == ["rollback"]
    at, verdict = verdicts[0]
    assert at <= 400 + 2 * USERS + 50  # within the window (+ the users' first new-version predictions)
    assert verdict.version == "v2" and verdict.previous == "v1" and verdict.old > verdict.new + 0.3
    assert rec.version == "v1" and "v2" in swapper.refused and swapper.rollbacks == 1
    assert metrics.value("hailstream_rollbacks_total", reason="guard") == 1.0
    assert messages and messages[0].type == ROLLBACK and messages[0].version == "v2"
    assert messages[0].previous == "v1" and messages[0].verdict["n"] == verdict.n
    assert guard.current is None  # no guard after a rollback
    # an announcement of the rolled-back version is refused from now on
    assert swapper.apply(ModelAnnouncement("v2", 2, "/nonexistent")) is False


def test_a_better_version_is_kept_and_the_previous_one_released(good: LiveModel) -> None:
    settings = Settings(top_k=10)
    bad = _scrambled(good, "v1")
    rec = OnlineRecommender(bad.model, bad.vocab, bad.version)
    metrics = Metrics(process_collector=False)
    swapper = HotSwapper(rec, metrics, SwapGuard(events=300, min_events=100))
    table = Table()
    _run(rec, swapper, table, _events(300), settings)
    _swap(swapper, rec, LiveModel(good.model, good.vocab, "v2"))
    verdicts, messages = _run(rec, swapper, table, _events(900, start=300), settings)
    assert [v.action for _, v in verdicts] == ["kept"] and messages == []
    assert verdicts[0][1].n >= 300 and verdicts[0][1].new > verdicts[0][1].old
    assert rec.version == "v2" and metrics.value("hailstream_rollbacks_total", reason="guard") == 0.0
    assert swapper.guard is not None and swapper.guard.last is None  # the previous model is let go


def test_the_same_model_under_a_new_label_is_kept(good: LiveModel) -> None:
    settings = Settings(top_k=10)
    rec = OnlineRecommender(good.model, good.vocab, good.version)
    swapper = HotSwapper(rec, None, SwapGuard(events=300, min_events=100))
    table = Table()
    _run(rec, swapper, table, _events(300), settings)
    _swap(swapper, rec, LiveModel(good.model, good.vocab, "v2"))
    verdicts, _ = _run(rec, swapper, table, _events(900, start=300), settings)
    assert [v.action for _, v in verdicts] == ["kept"]
    v = verdicts[0][1]
    assert v.new == v.old and np.isfinite(v.lower) and rec.version == "v2"


def test_predictions_are_published_by_the_new_version_only(good: LiveModel) -> None:
    settings = Settings(top_k=10)
    rec = OnlineRecommender(good.model, good.vocab, good.version)
    swapper = HotSwapper(rec, None, SwapGuard(events=300, min_events=100))
    table = Table()
    _run(rec, swapper, table, _events(60), settings)
    _swap(swapper, rec, _scrambled(good, "v2"))
    result = process_batch(_events(50, start=60), table.get, rec, None, new_prequential(10), settings,
                           guard=swapper.guard)
    assert {json.loads(v)["model_version"] for _, v in result.predictions} == {"v2"}
    assert len(result.predictions) == 50


def test_a_swap_during_a_guard_window_records_the_scores_so_far(good: LiveModel, tmp_path) -> None:
    from stream.messages import model_message
    from stream.trainer.model_store import ModelStore

    store = ModelStore(tmp_path)
    for n in (1, 2, 3):
        store.add(good.model, good.vocab, status="promoted", parent=n - 1 or None)
    rec = OnlineRecommender(good.model, good.vocab, "v1")
    swapper = HotSwapper(rec, None, SwapGuard(events=10_000, min_events=100))
    table = Table()
    settings = Settings(top_k=10)

    def announce(n: int) -> ModelAnnouncement:
        info = store.get(n)
        msg = parse_control(model_message(info.label, n, store.checkpoint_path(n), info.sha256))
        assert msg is not None
        return msg

    _run(rec, swapper, table, _events(120), settings)
    assert swapper.apply(announce(2)) and swapper.guard is not None and swapper.guard.current is not None
    _run(rec, swapper, table, _events(300, start=120), settings)
    assert swapper.apply(announce(3))  # v2's window had no verdict yet
    replaced = swapper.verdicts[-1]
    assert replaced["action"] == "replaced" and replaced["version"] == "v2" and replaced["n"] > 100
    assert replaced["new"] == replaced["old"]  # the same weights under two labels
    assert swapper.guard.current is not None and swapper.guard.current.new.version == "v3"
