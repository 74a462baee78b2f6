# syntax=docker/dockerfile:1
#
# bingcrawl in a container.
#
#   docker build -t bingcrawl .
#   docker run --rm -v bingcrawl-data:/data \
#     -e BING_SEARCH_V7_SUBSCRIPTION_KEY -e BINGCRAWL_QUERIES="red panda;aston martin" bingcrawl
#
# Every crawl option is also an environment variable BINGCRAWL_<OPTION> (--max-bytes ->
# BINGCRAWL_MAX_BYTES); flags given after the image name win over the environment.
# docker-compose.yml runs it against the built-in emulator, offline.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a wheel of the project, and wheels of its dependencies --------------------------
FROM ${PYTHON_IMAGE} AS build
# Optional extras, e.g. --build-arg EXTRAS=[parquet] for `bingcrawl export --format parquet`.
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets only pyproject.toml, README.md and bingcrawl/ through.
COPY . .
RUN python -m pip wheel --wheel-dir /wheels ".${EXTRAS}"

# ---- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# tini is PID 1: it forwards SIGTERM to bingcrawl (a Python PID 1 would get no default signal
# actions) and reaps the hash pool's exited processes. Without -g on purpose: the signal goes
# to bingcrawl only, which checkpoints and then shuts its own process pool down.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# /data is created owned by the user before VOLUME, so a new named volume inherits that owner.
RUN groupadd --system --gid 10001 bingcrawl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/bingcrawl \
       --create-home --shell /usr/sbin/nologin bingcrawl \
    && mkdir -p /data \
    && chown 10001:10001 /data

# Installed from the wheels only (no index): the image holds exactly what the build resolved.
ARG EXTRAS=""
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links=/wheels "bingcrawl${EXTRAS}"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BINGCRAWL_OUT=/data \
    BINGCRAWL_LOG_FORMAT=json \
    BINGCRAWL_METRICS_HOST=0.0.0.0 \
    BINGCRAWL_METRICS_PORT=9100

# The dataset (checkpoint, images, manifest) outlives the container: re-running resumes.
VOLUME /data
WORKDIR /data
EXPOSE 9100

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

STOPSIGNAL SIGTERM
# Healthy while /healthz on the metrics port answers 200 (503 once the crawl stalls).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "from bingcrawl.obs.metrics import probe_main; raise SystemExit(probe_main())"]

ENTRYPOINT ["tini", "--", "bingcrawl"]
CMD ["crawl"]
