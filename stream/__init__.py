"""hailstream.stream — everything that touches the outside world: settings, event records, the
embedded broker, topics, the Faust worker, replay, the demo and the CLI."""
