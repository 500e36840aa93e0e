"""hailstream.models — pure PyTorch/NumPy: encoders, MED losses, the K-peer HAIL ensemble,
vocabulary, data loaders and splits, offline training, evaluation and checkpoints.

Never imports faust, Kafka or Prometheus, and never reads the environment.
"""
