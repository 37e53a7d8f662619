# syntax=docker/dockerfile:1
# Keel's container image: `docker build --build-arg VERSION=0.1.0 --build-arg GIT_SHA=$(git rev-parse HEAD) -t keel .`
# Two stages: the build stage installs Keel into a virtualenv (wheels only, byte-compiled),
# the runtime stage copies that virtualenv onto a fresh slim base, so no build tool or pip
# cache ships. The image runs as an unprivileged user on a read-only root filesystem: the
# only writable paths are /tmp (uvicorn, tempfiles, the Prometheus multiprocess directory
# that `keel serve --workers N` creates under TMPDIR) and /var/lib/keel (local blobs when
# KEEL_STORAGE_URL is file://, migration backups, the audit signing key); mount both as
# volumes (tmpfs / emptyDir / a named volume).
# The base is pinned to an exact Python release and Debian suite; a release pipeline pins
# the digest on top of it (`python:3.12.12-slim-trixie@sha256:…`). Trixie because its
# postgresql-client is 17: `keel migrate apply` backs up with pg_dump, which must not be
# older than the server.

FROM python:3.12.12-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/keel
COPY pyproject.toml README.md ./
COPY src ./src
# --only-binary: every dependency ships manylinux wheels, so no compiler is needed; a
# dependency that suddenly did not would fail the build instead of pulling in gcc.
RUN /opt/keel/bin/pip install --only-binary=:all: --no-binary=keel . \
    && /opt/keel/bin/python -m compileall -q /opt/keel/lib

FROM python:3.12.12-slim-trixie AS runtime
ARG VERSION=0.1.0
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="keel" \
      org.opencontainers.image.description="Keel: a recognitions API built around a reusable reliability layer." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}"
# pg_dump/pg_restore for `keel migrate apply` (it backs up before it migrates).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keel \
    && useradd --system --uid 10001 --gid keel --home-dir /var/lib/keel --no-create-home \
       --shell /usr/sbin/nologin keel \
    && install -d -o keel -g keel -m 0750 \
       /var/lib/keel /var/lib/keel/blobs /var/lib/keel/backups /var/lib/keel/keys
COPY --from=build /opt/keel /opt/keel
ENV PATH=/opt/keel/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    KEEL_ENV=prod \
    KEEL_RELEASE_ID=${VERSION} \
    KEEL_GIT_SHA=${GIT_SHA} \
    KEEL_STORAGE_DIR=/var/lib/keel/blobs \
    KEEL_MIGRATION_BACKUP_DIR=/var/lib/keel/backups
VOLUME ["/tmp", "/var/lib/keel"]
WORKDIR /var/lib/keel
USER 10001:10001
EXPOSE 8000
# /live never touches a dependency, so a database outage never marks the container
# unhealthy. httpx is already a dependency of Keel; the slim base has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, httpx; sys.exit(httpx.get('http://127.0.0.1:8000/live', timeout=2.0).status_code != 200)"]
ENTRYPOINT ["keel"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
