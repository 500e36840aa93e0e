"""The names of the models (no torch import: the command line's ``--help`` lists them fast)."""

MODELS = ("hail", "sasrec", "gru4rec", "ensemble", "dml", "hail-published")
