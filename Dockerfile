# syntax=docker/dockerfile:1
# runwatch: alerting daemon for ML training runs tracked in Weights & Biases.
#
#   docker build -t runwatch .
#   docker run -d --name runwatch -p 9465:9465 \
#     -v "$PWD/runwatch:/etc/runwatch:ro" -v runwatch-state:/var/lib/runwatch \
#     -e WANDB_API_KEY -e SLACK_BOT_TOKEN runwatch
#
# The config (/etc/runwatch/runwatch.yaml) must set
#   store: sqlite:////var/lib/runwatch/state.db
#   http: {listen: "0.0.0.0:9465"}
# The default 127.0.0.1 is the container's own loopback: the HEALTHCHECK below still
# reaches it, but a published port, Prometheus and Kubernetes' probes do not.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: runwatch and every dependency as wheels ------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler and zlib's header for the compiled log reader (setup.py): only this
# stage has them. Without them the wheel would still build, reading logs in pure Python.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# Only what the wheel is built from: the tests, benchmarks and deploy files stay out.
COPY pyproject.toml setup.py README.md ./
COPY daemon ./daemon
RUN pip wheel --wheel-dir /wheels '.[postgres]'

# --- runtime: the wheels installed, no build tools, no source --------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="runwatch" \
      org.opencontainers.image.description="Alerts for ML training runs tracked in Weights & Biases" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, numeric non-root identity: Kubernetes' runAsNonRoot can check it, and volume
# permissions (fsGroup, chown on the host) can name it.
ARG UID=10001
RUN groupadd --system --gid "${UID}" runwatch \
 && useradd --system --uid "${UID}" --gid "${UID}" --home-dir /home/runwatch \
            --create-home --shell /usr/sbin/nologin runwatch \
 && install -d -o "${UID}" -g "${UID}" -m 0750 /var/lib/runwatch \
 && install -d -m 0755 /etc/runwatch

# The wheels are bind-mounted, not copied: they stay out of every layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'runwatch[postgres]' \
 && runwatch --version

# The wandb SDK and wandb-core (the Go process wandb.Api starts) write caches and logs under
# $HOME; matplotlib its font cache. With a read-only root file system (Kubernetes), mount
# something writable at /home/runwatch and /tmp.
ENV HOME=/home/runwatch \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /home/runwatch
USER ${UID}:${UID}

VOLUME /var/lib/runwatch
EXPOSE 9465

# /healthz answers while the scheduler lives. urllib, because the slim image has no curl;
# urlopen raises on a refused connection and on any non-2xx answer, so the exit code is 1.
# The first tick may take minutes on a large tree of run directories: hence start-period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=2m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9465/healthz', timeout=4)"]

# runwatch is PID 1 and handles SIGTERM itself (drains the tick, exits 0); `docker run
# --init` adds a reaper should a grandchild ever be orphaned. Logs are JSON when stdout is
# not a terminal.
ENTRYPOINT ["runwatch"]
CMD ["run", "--config", "/etc/runwatch/runwatch.yaml"]
