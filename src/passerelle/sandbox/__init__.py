"""Sandbox patient space: a stand-in for the national space speaking docs/patient-space-api.md.

It shares no code with the gateway (it imports no other ``passerelle`` area) so that a mistake in the
gateway's bundles cannot be hidden by the same mistake on the receiving side.

- :func:`create_app` builds the FastAPI application; :class:`SandboxConfig` configures it.
- :func:`serve` (async) and :func:`run_sandbox` (blocking, for the CLI) run it under uvicorn.
- :mod:`passerelle.sandbox.testing` starts a real one on a free port for integration tests.
"""

from passerelle.sandbox.app import create_app
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.server import run_sandbox, serve

__all__ = ["SandboxConfig", "create_app", "run_sandbox", "serve"]
