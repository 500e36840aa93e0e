"""hailstream.stream — everything that touches the outside world: settings, typed records (events,
messages, snapshots) at the top; kafka/, worker/, trainer/, observe/ and cli/ below."""
