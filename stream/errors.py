"""The root exception of the ``stream`` package."""


class StreamError(Exception):
    """Base class of every error raised by :mod:`stream`; messages say what to do."""


class BrokerError(StreamError):
    """The broker cannot be started, reached or used."""


class SettingsError(StreamError):
    """A setting (environment variable or CLI flag) has an invalid value."""
