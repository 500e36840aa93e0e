import json
import random

import pytest

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.records import INTERNAL_ERROR, Interaction, Prediction
from stream.settings import Settings
from stream.snapshots import MODEL_SCORER, read_stats, write_stats
from stream.worker.batch import Source, new_prequential, process_batch, replay_states
from stream.worker.prequential import score_event
from stream.worker.recommender import OnlineBaselines, OnlineRecommender
from stream.worker.stats import WorkerStats

SETTINGS = Settings(top_k=3, max_seq_len=4)


class EchoRecommender:
    """Deterministic stand-in for OnlineRecommender: recommends the history's distinct items, most
    recent first (so the prequential hit is known by hand)."""

    version = "echo-1"
    fallback = None

    def __init__(self, fail_on=None):
        self.fail_on = fail_on
        self.calls = 0

    def recommend_batch_versioned(self, histories, k):
        self.calls += 1
        if self.fail_on is not None and any(self.fail_on in h for h in histories):
            raise RuntimeError("boom")
        out = []
        for h in histories:
            seen = list(dict.fromkeys(reversed(h)))[:k]
            out.append((seen, [float(-n) for n in range(len(seen))]))
        return self.version, out

    def recommend_batch(self, histories, k):
        return self.recommend_batch_versioned(histories, k)[1]


def raw(user, item, ts=0.0, event_id=None):
    return Interaction(str(user), str(item), float(ts), event_id).to_json()


def sources(raws, partition=0, start=0, topic="in"):
    return [Source(r, topic, partition, start + n) for n, r in enumerate(raws)]


def run(batches, rec=None, baselines=None, table=None, settings=SETTINGS):
    rec = rec or EchoRecommender()
    table = {} if table is None else table
    preq = new_prequential(settings.top_k, baselines)
    outs = []
    for batch in batches:
        out = process_batch(batch, table.get, rec, baselines, preq, settings)
        for user, upd in out.updates.items():
            table[user] = upd.value
        outs.append(out)
    return outs, table, preq


def random_events(n, users=12, items=20, seed=0):
    rng = random.Random(seed)
    return [(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}") for _ in range(n)]


def test_every_event_is_a_prediction_or_a_dead_letter():
    raws = [
        raw("u1", "a", event_id="e1"),
        b"{not json",
        json.dumps({"user_id": "u1"}).encode(),
        json.dumps({"user_id": "u1", "item_id": "b", "ts": "yesterday"}).encode(),
        b"x" * (SETTINGS.max_message_bytes + 1),
        raw("u2", "b"),
        None,
        raw("u1", "c", event_id="e3"),
    ]
    (out,), table, _ = run([sources(raws, partition=2, start=10)])
    assert len(out.predictions) + len(out.dead_letters) == len(raws) == out.stats.events
    reasons = [json.loads(v)["reason"] for _, v in out.dead_letters]
    assert reasons == ["bad_json", "missing_field", "wrong_type", "oversized", "bad_json"]
    assert dict(out.stats.dead_letters) == {"bad_json": 2, "missing_field": 1, "wrong_type": 1, "oversized": 1}
    dl = json.loads(out.dead_letters[0][1])
    assert (dl["topic"], dl["partition"], dl["offset"]) == ("in", 2, 11)
    preds = [Prediction.from_json(v) for _, v in out.predictions]
    assert [(p.user_id, p.event_id) for p in preds] == [("u1", "e1"), ("u2", "in:2:15"), ("u1", "e3")]
    assert [k for k, _ in out.predictions] == [b"u1", b"u2", b"u1"]
    assert all(p.model_version == "echo-1" and p.k == 3 for p in preds)
    last = table["u1"].pop("last")
    assert table["u1"] == {"items": ["a", "c"], "pred": ["c", "a"], "off": [2, 17], "eids": ["e1", "e3"]}
    assert last == {"event_id": "e3", "scores": preds[-1].scores, "model_version": "echo-1",
                    "produced_at": preds[-1].produced_at}


def test_one_forward_pass_per_batch():
    rec = EchoRecommender()
    run([sources([raw(u, i) for u, i in random_events(50)])], rec=rec)
    assert rec.calls == 1


def test_sequences_are_bounded_and_in_input_order():
    events = random_events(300)
    batches = [sources([raw(u, i) for u, i in events[s : s + 37]], start=s) for s in range(0, 300, 37)]
    _, table, _ = run(batches)
    expected = replay_states(events, SETTINGS.max_seq_len)
    assert {u: v["items"] for u, v in table.items()} == expected


def test_prequential_scores_each_event_against_the_users_previous_prediction():
    events = random_events(400, users=6, items=8, seed=3)
    outs, _, preq = run([sources([raw(u, i) for u, i in events[s : s + 50]], start=s) for s in range(0, 400, 50)])
    published = [Prediction.from_json(v) for out in outs for _, v in out.predictions]
    # Offline recomputation from what was published.
    last: dict[str, list[str]] = {}
    hits, n, cold = 0.0, 0, 0
    for (user, item), pred in zip(events, published, strict=True):
        if user in last:
            hits += score_event(last[user], item, 3)[0]
            n += 1
        else:
            cold += 1
        last[user] = pred.items
    s = preq[MODEL_SCORER].summary()
    assert (s["n"], s["cold"]) == (n, cold) and s["hr@3"] == pytest.approx(hits / n)
    assert sum(out.stats.cold for out in outs) == cold == 6


def test_results_do_not_depend_on_how_the_stream_is_batched():
    events = random_events(240, seed=5)
    raws = [raw(u, i, event_id=str(n)) for n, (u, i) in enumerate(events)]

    def go(size):
        b = OnlineBaselines(popularity_window=50)
        outs, table, preq = run([sources(raws[s : s + size], start=s) for s in range(0, len(raws), size)], baselines=b)
        preds = [v for out in outs for _, v in out.predictions]
        for value in table.values():  # wall-clock time of publication
            value["last"].pop("produced_at")
        return [json.loads(p)["items"] for p in preds], table, {k: p.summary() for k, p in preq.items()}

    one, many = go(1), go(64)
    assert one[0] == many[0] and one[1] == many[1]
    assert one[2] == many[2]
    assert set(one[2]) == {MODEL_SCORER, "popularity", "markov", "user-frequency"}


def test_redelivered_events_are_skipped():
    events = random_events(60)
    batch = sources([raw(u, i) for u, i in events])
    (first,), table, _ = run([batch])
    before = json.loads(json.dumps(table))
    (again,), table, _ = run([batch[:40]], table=table)  # a crash replay of already-applied events
    assert again.predictions == [] and again.updates == {} and again.stats.duplicates == 40
    assert table == before
    # Events from another partition are never confused with the stored offset.
    (other,), table, _ = run([sources([raw(events[0][0], "zz")], partition=1, start=0)], table=table)
    assert len(other.predictions) == 1


def test_a_failing_model_dead_letters_only_its_events():
    rec = EchoRecommender(fail_on="bad")
    raws = [raw("u1", "a"), raw("u2", "bad"), raw("u3", "c")]
    (out,), table, _ = run([sources(raws)], rec=rec)
    assert len(out.predictions) == 2 and len(out.dead_letters) == 1
    assert json.loads(out.dead_letters[0][1])["reason"] == INTERNAL_ERROR
    assert out.stats.dead_letters == {INTERNAL_ERROR: 1}
    assert table["u2"]["items"] == ["bad"] and table["u2"]["pred"] is None


def test_a_corrupt_table_value_is_a_dead_letter_not_a_crash():
    table = {"u1": {"items": 5, "pred": None, "off": None}}
    (out,), _, _ = run([sources([raw("u1", "a"), raw("u2", "b")])], table=table)
    assert len(out.predictions) == 1 and out.stats.dead_letters == {INTERNAL_ERROR: 1}


def test_with_a_real_model_and_cold_start_fallback():
    vocab = ItemVocab(["a", "b", "c", "d"])
    model = HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows)
    rec = OnlineRecommender(model, vocab, "v7")
    b = OnlineBaselines(popularity_window=10)
    rec.fallback = b.popular
    raws = [raw("u1", "a"), raw("u1", "new-item"), raw("u2", "only-new")]
    (first,), table, preq = run([sources(raws[:2])], rec=rec, baselines=b)
    assert [len(Prediction.from_json(v).items) for _, v in first.predictions] == [3, 3]
    (second,), _, _ = run([sources(raws[2:], start=2)], rec=rec, baselines=b, table=table)
    cold = Prediction.from_json(second.predictions[0][1])
    assert cold.items == ["a", "new-item"] and cold.model_version == "v7"  # recent popularity


def _leaf_types(value):
    if isinstance(value, dict):
        return {t for v in value.values() for t in _leaf_types(v)}
    if isinstance(value, list):
        return {t for v in value for t in _leaf_types(v)}
    return {type(value)}


def test_state_types_are_builtin_so_any_json_encoder_takes_them():
    # Faust serializes the table with orjson when it is installed, and orjson refuses numpy
    # scalars (a stdlib-json venv does not notice: numpy.float64 is a float subclass). The
    # cold-start answer (recent popularity) once carried numpy.float64 scores into the state.
    vocab = ItemVocab(["a", "b"])
    rec = OnlineRecommender(HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows), vocab, "v1")
    b = OnlineBaselines(popularity_window=10)
    rec.fallback = b.popular
    (out,), table, _ = run([sources([raw("u1", "a"), raw("u2", "cold"), raw("u2", "a")])], rec=rec, baselines=b)
    assert {type(s) for s in b.popular(2)[1]} == {float}
    assert table["u2"]["last"]["scores"] and _leaf_types(table) <= {str, int, float, bool, type(None)}
    for _, value in out.predictions:
        assert {type(s) for s in Prediction.from_json(value).scores} <= {float}


def test_sampled_baselines_get_a_model_scorer_on_the_same_sample():
    b = OnlineBaselines(sample_every=3)
    preq = new_prequential(3, b)
    assert set(preq) == {MODEL_SCORER, MODEL_SCORER + "@sample", "popularity", "markov", "user-frequency"}
    events = random_events(300, users=30)
    outs, _, preq = run([sources([raw(u, i) for u, i in events])], baselines=b)
    sampled_users = {u for u, _ in events if b.sampled(u)}
    n_sampled = sum(1 for u, _ in events if u in sampled_users)
    s = preq[MODEL_SCORER + "@sample"].summary()
    assert s["n"] + s["cold"] == n_sampled == preq["markov"].n + preq["markov"].cold
    assert preq[MODEL_SCORER].n + preq[MODEL_SCORER].cold == 300


def test_worker_stats_and_stats_file(tmp_path):
    events = random_events(30)
    batch = [s._replace(timestamp=1.0) for s in sources([raw(u, i) for u, i in events] + [b"bad"])]
    preq = new_prequential(3)
    stats = WorkerStats(preq)
    assert stats.latency() == {"p50": None, "p99": None, "max": None}
    out = process_batch(batch, {}.get, EchoRecommender(), None, preq, SETTINGS, now=lambda: 3.0)
    stats.add(out)
    d = stats.to_dict()
    assert (d["events"], d["predictions"], d["dead_letters"], d["model_version"]) == (31, 30, 1, "echo-1")
    assert d["latency_s"]["p50"] == pytest.approx(2.0) and d["prequential"][MODEL_SCORER]["n"] + d["cold"] == 30
    path = tmp_path / "sub" / "stats.json"
    write_stats(path, d)
    assert read_stats(path) == json.loads(json.dumps(d))
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    with pytest.raises(StreamError):
        read_stats(tmp_path / "missing.json")


def test_plain_tuples_are_accepted():
    out = process_batch([(raw("u", "a"), "in", 1, 7)], {}.get, EchoRecommender(), None, new_prequential(3), SETTINGS)
    assert Prediction.from_json(out.predictions[0][1]).event_id == "in:1:7"
    assert out.updates["u"].partition == 1 and out.updates["u"].value["off"] == [1, 7]


def test_batch_stats_time_the_baselines_as_their_own_phase_in_wall_and_cpu_seconds():
    from stream.worker.stats import WorkerStats

    raws = [raw(u, i) for u, i in random_events(300, users=40, items=60)]
    b = OnlineBaselines(popularity_window=50)
    (out,), _, preq = run([sources(raws)], baselines=b)
    phases = ("prepare", "inference", "baselines", "finish")
    assert tuple(out.stats.seconds) == phases and tuple(out.stats.cpu_seconds) == phases
    assert all(v >= 0 for v in (*out.stats.seconds.values(), *out.stats.cpu_seconds.values()))
    assert out.stats.seconds["baselines"] > 0 and out.stats.cpu_seconds["baselines"] > 0  # 300 learn + predict
    (bare,), _, _ = run([sources(raws)])
    assert bare.stats.seconds["baselines"] == 0 == bare.stats.cpu_seconds["baselines"]
    stats = WorkerStats(preq)
    stats.add(out)
    stats.add(out)
    d = stats.to_dict()
    assert d["busy_cpu_s"]["baselines"] == pytest.approx(2 * out.stats.cpu_seconds["baselines"])
    assert set(d["busy_s"]) == set(phases)


class WindowRecorder(EchoRecommender):
    """Records the histories the model is asked about; ``live.model.config.max_len`` = 4."""

    class live:  # noqa: N801 - mimics OnlineRecommender.live
        vocab = frozenset(f"i{n}" for n in range(20)) | set("abcdefg")

        class model:  # noqa: N801
            class config:  # noqa: N801
                max_len = 4

    def __init__(self):
        super().__init__()
        self.seen = []

    def recommend_batch_versioned(self, histories, k):
        self.seen.extend(list(h) for h in histories)
        return super().recommend_batch_versioned(histories, k)


def test_a_window_stride_moves_the_models_window_by_whole_strides():
    """max_len 4, stride 2: the window grows to 4 items, then restarts at 3 (= 4 - 2 + 1) and grows
    again; every event's window extends the previous one except where it moves. The stored
    sequence (and so the baselines) keeps its max_seq_len items."""
    settings = Settings(top_k=3, max_seq_len=6, worker={"window_stride": 2})
    rec = WindowRecorder()
    items = [f"i{n}" for n in range(1, 10)]
    # one event per batch, then a batch with the rest at once: the same windows either way
    _, table, _ = run([sources([raw("u", i)], start=n) for n, i in enumerate(items[:5])]
                      + [sources([raw("u", i) for i in items[5:]], start=5)], rec=rec, settings=settings)
    assert [len(w) for w in rec.seen] == [1, 2, 3, 4, 3, 4, 3, 4, 3]
    assert rec.seen[4] == ["i3", "i4", "i5"] and rec.seen[8] == ["i7", "i8", "i9"]
    assert table["u"]["items"] == items[-6:] and table["u"]["w"] == 3  # i7 is items[3] of the stored six


def test_a_state_written_without_a_stride_starts_its_window_at_the_last_max_len_items():
    settings = Settings(top_k=3, max_seq_len=6, worker={"window_stride": 2})
    rec = WindowRecorder()
    def old():
        return {"u": {"items": ["a", "b", "c", "d", "e"], "pred": None, "off": [0, 4]}}

    run([sources([raw("u", "f"), raw("u", "g")], start=5)], rec=rec, table=old(), settings=settings)
    assert rec.seen == [["d", "e", "f"], ["d", "e", "f", "g"]]  # b..e was the window; it moved by 2
    without = WindowRecorder()
    run([sources([raw("u", "f")], start=5)], rec=without, table=old())
    assert without.seen == [["c", "d", "e", "f"]]  # stride 0 (SETTINGS): the last max_seq_len = 4
