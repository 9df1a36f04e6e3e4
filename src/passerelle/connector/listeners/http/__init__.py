"""The HTTP listener: one uvicorn server (:mod:`.server`) serving one FastAPI application (:mod:`.app`)
made of small routers, each given only what it needs: health, readiness and metrics (:mod:`.health`),
the message browser and replay API (:mod:`.browser`), CDA intake, ``POST /v1/documents``
(:mod:`.documents`), and the web console at ``/`` (:mod:`.console`). Every route but the health checks
declares the role it needs through :mod:`.auth` (bearer tokens, client certificates via :mod:`.tls`);
the console's sessions are in :mod:`.sessions`. No router knows the composition root."""
