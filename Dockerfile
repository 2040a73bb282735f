# syntax=docker/dockerfile:1
#
# Two targets on one base:
#   runtime  what production runs: the package without stream/devkit (the default target)
#   devkit   runtime plus the devkit, for docker compose's `upstream` service
#            (`stream upstream`, the reference parse API)
# The builders install into a virtualenv at /opt/venv; each target copies only that
# virtualenv onto a clean slim image (no pip cache, no build context) and runs it as an
# unprivileged user with a numeric uid, so Kubernetes' runAsNonRoot can verify it.

FROM python:3.11-slim AS source

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# pyproject.toml names README.md as the package's long description, so it is part of the build.
COPY pyproject.toml README.md ./
COPY stream ./stream


FROM source AS devkit-builder
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .


FROM source AS runtime-builder
# In the devkit's place, a module that makes `stream upstream|stack|demo` exit with one line.
RUN rm -r stream/devkit
COPY deploy/docker/devkit_absent.py stream/devkit/__init__.py
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .


FROM python:3.11-slim AS base

# Byte code was compiled at install time; the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 stream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin stream

USER 10001:10001
WORKDIR /tmp

# /metrics, /healthz and /readyz (STREAM_METRICS_PORT).
EXPOSE 9100
# slim has no curl: ask Python. urlopen raises on a refused connection or an HTTP error.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_METRICS_PORT', '9100'), timeout=2)"]

ENTRYPOINT ["stream"]
CMD ["run"]


FROM base AS devkit
COPY --from=devkit-builder /opt/venv /opt/venv


# Last, so that a plain `docker build .` gives the production image.
FROM base AS runtime
COPY --from=runtime-builder /opt/venv /opt/venv
