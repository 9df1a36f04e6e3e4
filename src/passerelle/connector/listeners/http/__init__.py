"""The HTTP listener: one uvicorn server (:mod:`.server`) serving one FastAPI application (:mod:`.app`)
made of small routers, each given only what it needs: health, readiness and metrics (:mod:`.health`),
the message browser and replay API (:mod:`.browser`), and CDA intake, ``POST /v1/documents``
(:mod:`.documents`). No router knows the composition root."""
