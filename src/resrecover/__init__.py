"""resrecover: reproducible deep-learning resolution recovery for 3D X-ray microscopy."""

__version__ = "0.1.0"


class ResrecoverError(Exception):
    """An error the user can act on; the CLI prints it as one line without a traceback."""
