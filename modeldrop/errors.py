"""Errors the suite reports to the operator as one line, never as a traceback."""


class ModeldropError(Exception):
    """Base class for errors raised by the library."""


class InputError(ModeldropError):
    """Bad operator input (option, env key, model id, node spec, profile).

    The message is one line naming the input and what would be valid; the plugin turns it into
    pytest's usage error (exit status 4) before any node is touched.
    """


class NodeError(ModeldropError):
    """A node could not be reached or a command on it could not be run (SSH, timeout, probe)."""


class CommandTimeout(NodeError):
    """A command on a node ran past its timeout; `partial` holds what it printed so far."""

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial
