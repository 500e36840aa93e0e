"""The names of the models and of their options (no torch import: the command line's ``--help``
lists them fast; the modules that implement each option import its tuple from here)."""

MODELS = ("hail", "sasrec", "gru4rec", "ensemble", "dml", "hail-published")
MED_FORMS = ("coded", "weighted_ce", "unlikelihood", "exclusive")  # models.losses
HISTORY = ("none", "copy")  # models.history
TRANS_MODES = ("mix", "bias")  # models.transitions
POSITIONS = ("end", "start")  # models.encoders (SASRec / BERT4Rec positions)
OPTIMIZERS = ("adam", "adamw")  # models.trainer
SCHEDULES = ("constant", "linear")  # models.trainer
