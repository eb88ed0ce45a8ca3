"""Errors a user can fix: the CLI prints their message without a traceback and exits non-zero."""


class GanCliError(Exception):
    """A problem with the user's input (config, data, checkpoint) that the message explains."""


class ConfigError(GanCliError):
    pass


class DataError(GanCliError):
    pass


class CheckpointError(GanCliError):
    pass
