"""safebot: reinforcement learning for robot arms under adaptive safety envelopes."""

__version__ = "0.1.0"
