"""``hailstream models list|promote|rollback``: the operator's view of the model store.

``promote`` and ``rollback`` change the store's live version and announce it on the model-updates
topic (:mod:`stream.messages`), so running workers swap to it and the trainer fine-tunes from it;
restarting processes read the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from stream.messages import version_label
from stream.settings import Settings
from stream.trainer.model_store import ModelStore, ModelStoreError, VersionInfo


def format_versions(versions: list[VersionInfo], live: VersionInfo | None) -> str:
    """The table ``hailstream models list`` prints (``*`` marks the live version)."""
    rows = [("", "version", "status", "parent", "created (UTC)", "trigger", "gate ndcg@10 cand/live", "weights")]
    for v in versions:
        cand = v.metrics.get("candidate", {}).get("ndcg@10") if isinstance(v.metrics.get("candidate"), dict) else None
        base = v.metrics.get("live", {}).get("ndcg@10") if isinstance(v.metrics.get("live"), dict) else None
        gate = f"{cand:.4f}/{base:.4f}" if cand is not None and base is not None else "-"
        rows.append((
            "*" if live is not None and v.version == live.version else "", v.label, v.status,
            version_label(v.parent) if v.parent else "-",
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at)), v.trigger or "-", gate,
            "yes" if v.checkpoint else "no",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def announce_version(settings: Settings, store: ModelStore, info: VersionInfo, reason: str) -> None:
    """Publish a model message for ``info`` on the model-updates topic (workers swap to it)."""
    from stream.kafka.clients import make_producer
    from stream.messages import CONTROL_KEY, model_message

    value = model_message(info.label, info.version, store.checkpoint_path(info.version), info.sha256,
                          info.parent, info.metrics, reason, key=settings.signing_key())
    producer = make_producer(settings, linger_ms=0)
    try:
        producer.send(settings.model_updates_topic, key=CONTROL_KEY, value=value).get(timeout=30)
    finally:
        producer.close(timeout=5)


def models_command(settings: Settings, action: str, version: int | None = None, announce: bool = True) -> str:
    """``hailstream models list|promote V|rollback`` on ``settings.model_dir``; returns what to
    print. ``promote`` and ``rollback`` announce the new live version on the model-updates topic
    (unless ``announce=False``), so running workers swap to it; restarting ones read the store."""
    store = ModelStore(settings.model_dir)
    if action == "list":
        versions = store.list()
        if not versions:
            runs = sorted((Path(store.directory).parent / "hailstream-runs").glob("demo-*/models"))
            hint = f" (the latest demo's store: --model-dir {runs[-1]})" if runs else ""
            return f"no versions in {store.directory}{hint}"
        return format_versions(versions, store.latest_promoted())
    if action == "promote":
        if version is None:
            raise ModelStoreError("promote needs a version number: hailstream models promote 3")
        info = store.promote(version)
        done = f"{info.label} is live"
    elif action == "rollback":
        info = store.rollback()
        done = f"rolled back: {info.label} is live"
    else:
        raise ModelStoreError(f"unknown action {action!r}; use list, promote or rollback")
    if announce:
        try:
            announce_version(settings, store, info, action)
            done += f" (announced on {settings.model_updates_topic})"
        except Exception as e:
            done += (f"; WARNING: could not announce it on {settings.model_updates_topic} ({e}): running workers keep "
                     "their version until they restart")
    return done
