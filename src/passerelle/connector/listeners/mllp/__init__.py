"""MLLP transport: framing (pure), the asyncio listener and its settings.

The composition root builds :class:`MllpServer` with :class:`MllpSettings`, the intake (an
:class:`MllpHandler`), optionally an :class:`OversizeHandler` and an :class:`MllpMetrics` sink.
"""

from passerelle.connector.listeners.mllp.framing import (
    Frame,
    FrameRejected,
    FrameTimeoutError,
    FramingLimits,
    IdleTimeoutError,
    JunkLimitError,
    MllpFramer,
    TooLarge,
)
from passerelle.connector.listeners.mllp.ports import MllpHandler, MllpMetrics, NullMetrics, OversizeHandler
from passerelle.connector.listeners.mllp.server import MllpServer
from passerelle.connector.listeners.mllp.settings import MllpSettings, MllpTlsSettings
from passerelle.connector.listeners.mllp.tls import ClientAllowList, ClientCertificateError, server_context
from passerelle.mappings.hl7v2.mllp import END_BLOCK, START_BLOCK, frame

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "ClientAllowList",
    "ClientCertificateError",
    "Frame",
    "FrameRejected",
    "FrameTimeoutError",
    "FramingLimits",
    "IdleTimeoutError",
    "JunkLimitError",
    "MllpFramer",
    "MllpHandler",
    "MllpMetrics",
    "MllpServer",
    "MllpSettings",
    "MllpTlsSettings",
    "NullMetrics",
    "OversizeHandler",
    "TooLarge",
    "frame",
    "server_context",
]
