"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input from the user: the CLI prints `jmvae: error: <message>` and exits with status 2.

    The message names the bad value and what is allowed, e.g. ``z-dim 0 (allowed: an integer >= 1)``.
    """
