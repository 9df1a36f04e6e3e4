# Passerelle gateway image. How to run it: docs/operations.md; why it is built this way:
# docs/adr/0021-production-image-and-locks.md.
#
#   docker build -t passerelle .
#   docker run --read-only -v /srv/passerelle:/data -e PASSERELLE__SPACE__URL=https://space.example.org/fhir \
#     -p 2575:2575 -p 8080:8080 -p 11112:11112 passerelle
#
# Behind a site package mirror and/or a TLS-inspecting proxy:
#   docker build --build-arg PIP_INDEX_URL=https://mirror.example.org/pypi/simple \
#     --build-arg EXTRA_CA_BUNDLE="$(cat /etc/ssl/site-proxy-ca.pem)" -t passerelle .
#
# The base image is pinned by the digest of its multi-architecture index (python:3.11.14-slim-bookworm);
# docs/operations.md says how a site moves it forward or points it at its own registry (BASE_IMAGE).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- build: the runtime environment from the hashed runtime lock (docker/build-venv.sh) -------------
FROM ${BASE_IMAGE} AS build
# Package index (a site mirror) and extra CA certificates in PEM (a TLS-inspecting proxy), build only.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG EXTRA_CA_BUNDLE=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/build/ca-bundle.pem
WORKDIR /build
RUN cp /etc/ssl/certs/ca-certificates.crt ca-bundle.pem \
    && printf '%s\n' "$EXTRA_CA_BUNDLE" >> ca-bundle.pem
COPY requirements/build.lock requirements/runtime.lock requirements/
COPY pyproject.toml README.md docker/build-venv.sh ./
COPY src/ src/
RUN sh build-venv.sh /build /opt/passerelle

# --- runtime: the environment, the image's configuration, a non-root user ---------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="Passerelle" \
      org.opencontainers.image.description="HL7v2, CDA R2 and DICOM documents into Mon espace santé (DMP)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base's own pip, setuptools and wheel are build tools: the gateway runs from /opt/passerelle.
RUN python -m pip uninstall --quiet --yes pip setuptools wheel \
    && groupadd --system --gid 10001 passerelle \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin passerelle \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data
COPY --from=build /opt/passerelle /opt/passerelle
COPY docker/entrypoint.py docker/healthcheck.py /opt/passerelle/image/
COPY docker/passerelle.yaml /etc/passerelle/passerelle.yaml
COPY config/loinc/ /etc/passerelle/loinc/
COPY config/passerelle.example.yaml config/visibility-rules.yaml /etc/passerelle/examples/
# Read-only root filesystem: nothing is written outside /data (no bytecode, temporary files under /data).
ENV PATH=/opt/passerelle/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    TMPDIR=/data/tmp \
    PASSERELLE__DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# MLLP, HTTP (API, /metrics, /readyz), DICOM
EXPOSE 2575 8080 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/passerelle/bin/python", "-I", "-B", "/opt/passerelle/image/healthcheck.py"]
ENTRYPOINT ["/opt/passerelle/bin/python", "-I", "-B", "/opt/passerelle/image/entrypoint.py"]
CMD ["run"]
