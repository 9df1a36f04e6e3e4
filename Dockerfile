# Passerelle gateway image. Installs from the same hashed lock as `make`.
# Build: docker build -t passerelle .   Run: docker run -v /srv/passerelle:/data -p 2575:2575 -p 8080:8080 passerelle
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/passerelle
COPY requirements.lock pyproject.toml README.md ./
RUN /opt/passerelle/bin/python -m pip install --no-cache-dir --require-hashes -r requirements.lock
COPY src ./src
RUN /opt/passerelle/bin/python -m pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin passerelle \
    && mkdir -p /data /etc/passerelle && chown passerelle /data
COPY --from=build /opt/passerelle /opt/passerelle
COPY config/ /etc/passerelle/
ENV PATH=/opt/passerelle/bin:$PATH \
    PASSERELLE__DATA_DIR=/data \
    PASSERELLE__MLLP__HOST=0.0.0.0 \
    PASSERELLE__HTTP__HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER passerelle
VOLUME ["/data"]
EXPOSE 2575 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["passerelle"]
CMD ["run", "--config", "/etc/passerelle/passerelle.example.yaml"]
