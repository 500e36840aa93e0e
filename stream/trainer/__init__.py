"""The incremental trainer (``hailstream trainer``): its process loop, the learner (fine-tune, gate,
promote), the training window and the versioned model store."""

from stream._lazy import lazy_exports

__all__ = ["run_trainer", "TrainerRuntime", "Learner", "TrainingWindow", "ModelStore", "open_learner"]
__getattr__ = lazy_exports(__name__, {
    "run_trainer": "process", "TrainerRuntime": "runtime", "Learner": "learner",
    "TrainingWindow": "window", "ModelStore": "model_store", "open_learner": "process",
})
