"""Observability of a running crawl: structured logs, Prometheus metrics, environment config.

- :mod:`bingcrawl.obs.logs`: :func:`configure_logging` (text or JSON lines, secrets redacted)
  and the ``contextvars`` log context (:func:`bind`, :func:`log_context`).
- :mod:`bingcrawl.obs.metrics`: :class:`MetricsServer` (``/metrics``, ``/healthz``) over any
  :class:`MetricsSource`, and the container health probe.
- :mod:`bingcrawl.obs.envconfig`: :func:`apply_env_defaults`, every CLI option as a
  ``BINGCRAWL_<OPTION>`` variable (flags > environment > defaults).
"""

from __future__ import annotations

from bingcrawl.obs.envconfig import apply_env_defaults, document_env, env_variables
from bingcrawl.obs.logs import (
    RedactingFilter,
    bind,
    configure_logging,
    current_context,
    log_context,
)
from bingcrawl.obs.metrics import (
    MetricsServer,
    MetricsSnapshot,
    MetricsSource,
    RateWindow,
    probe_main,
)

__all__ = [
    "MetricsServer",
    "MetricsSnapshot",
    "MetricsSource",
    "RateWindow",
    "RedactingFilter",
    "apply_env_defaults",
    "bind",
    "configure_logging",
    "current_context",
    "document_env",
    "env_variables",
    "log_context",
    "probe_main",
]
