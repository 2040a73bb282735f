# syntax=docker/dockerfile:1
#
# Two stages. The builder installs the package and its dependencies into a virtualenv at
# /opt/venv; the runtime copies only that virtualenv onto a clean slim image (no pip
# cache, no build context) and runs it as an unprivileged user with a numeric uid, so
# Kubernetes' runAsNonRoot can verify it.

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# pyproject.toml names README.md as the package's long description, so it is part of the build.
COPY pyproject.toml README.md ./
COPY stream ./stream
RUN /opt/venv/bin/pip install .


FROM python:3.11-slim AS runtime

# Byte code was compiled at install time; the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 stream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin stream
COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /tmp

# /metrics, /healthz and /readyz (STREAM_METRICS_PORT).
EXPOSE 9100
# slim has no curl: ask Python. urlopen raises on a refused connection or an HTTP error.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_METRICS_PORT', '9100'), timeout=2)"]

ENTRYPOINT ["stream"]
CMD ["run"]
