"""Telemetry: the statistics keeper and the error state keeper (process-wide, resettable)."""

from .error_states import ErrorStateKeeper, error_states
from .stats import StatisticsKeeper, stats

__all__ = ["ErrorStateKeeper", "StatisticsKeeper", "error_states", "stats"]
