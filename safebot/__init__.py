"""safebot: reinforcement learning for robot arms under adaptive safety envelopes.

Importing the package changes nothing in the process: the environment defaults
that safebot's own entry points apply live in :mod:`safebot.runtime`.
"""

__version__ = "0.1.0"
