# syntax=docker/dockerfile:1
# The one image every roomlog Python service runs from: the api, streams, media nodes, the
# recorder, the edge agent and the migrations (deploy/k8s picks each with its `command`,
# e.g. `python -m streams`). Build at the repository root:
#   docker build -t roomlog:dev .
# Multi-stage: the build stage installs the runtime dependencies ([project].dependencies of
# pyproject.toml, each at the version requirements.lock pins, with the lock as constraints for
# everything they pull in) into /opt/venv, wheels only (every one of the 84 has a manylinux
# wheel for CPython 3.11, so no compiler is needed); the runtime stage copies that venv and the
# source, adds ffmpeg (the recorder's composites), and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > runtime-requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: --constraint requirements.lock --requirement runtime-requirements.txt \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 roomlog \
 && useradd --system --uid 10001 --gid roomlog --home-dir /app --no-create-home --shell /usr/sbin/nologin roomlog
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini pyproject.toml requirements.lock ./
COPY producers/ producers/
COPY streams/ streams/
COPY api/ api/
COPY media_node/ media_node/
COPY recorder/ recorder/
COPY edge/ edge/
COPY client/ client/
COPY db/ db/
COPY observability/ observability/
COPY web/ web/
COPY deploy/__init__.py deploy/
COPY deploy/k8s/__init__.py deploy/k8s/probe.py deploy/k8s/topics.py deploy/k8s/wait_topics.py deploy/k8s/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "api", "--host", "0.0.0.0"]
