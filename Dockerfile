# migproxy container image.
#
#   docker build -t migproxy .
#   docker run -d --name migproxy \
#       -p 4444:4444 -p 9464:9464 \
#       -v /etc/migproxy:/etc/migproxy:ro \
#       --read-only --cap-drop ALL --security-opt no-new-privileges \
#       --stop-timeout 330 \
#       migproxy --config /etc/migproxy/migproxy.toml --metrics 0.0.0.0:9464
#
# Configuration: mount a directory with migproxy.toml (and any profile files it names) at
# /etc/migproxy; see config/migproxy.example.toml (also in the image under
# /usr/local/share/doc/migproxy/). The tested profiles of config/profiles/ are in
# /usr/local/share/migproxy/profiles/ (profile = "/usr/local/share/migproxy/profiles/NAME.toml").
# No configuration is baked in: without one the daemon exits with code 2 and says so.
#
# Metrics: the daemon serves them on 127.0.0.1:9464 by default, which is unreachable from
# outside the container. To publish them (-p 9464:9464, a Prometheus scrape), bind them to
# all interfaces, either with `--metrics 0.0.0.0:9464` on the command line as above (any
# arguments after the image name replace CMD) or with `metrics = "0.0.0.0:9464"` in the
# [daemon] table of the mounted configuration. The HEALTHCHECK queries 127.0.0.1:9464
# from inside the container, which works with either binding; if you move or disable the
# endpoint, set MIGPROXY_HEALTHCHECK_URL (or run with --no-healthcheck).
#
# Stopping: SIGTERM makes the daemon stop accepting and drain in-flight migrations for up
# to drain_timeout (default 300 s) before exiting 0. Docker's default grace period is 10 s,
# after which it SIGKILLs and cuts running migrations: give it more, as above
# (--stop-timeout 330; compose: stop_grace_period: 330s; Kubernetes:
# terminationGracePeriodSeconds: 330).
#
# The offline tools work too, with a stream mounted in:
#   docker run --rm -v "$PWD":/data migproxy inspect /data/vm.mig
#
# Build requirement: BuildKit (Docker >= 23 default, or DOCKER_BUILDKIT=1; buildah and
# podman also support it) for RUN --mount, which keeps the wheels out of the final layers.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a wheel of migproxy and wheels of its dependencies -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A C compiler for the compiled RAM record walk (migproxy/stream/_ramwalk.c), the RAM
# pump (migproxy/daemon/_rampump.c) and the kernel relay's loop
# (migproxy/daemon/_kernelrelay.c); the wheel carries the built modules, so the runtime
# stage needs no compiler. (Without one the build still succeeds, with the pure-Python
# walk.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# Only what the wheel is built from (see .dockerignore), so edits to tests do not rebuild.
COPY pyproject.toml setup.py README.md ./
COPY migproxy ./migproxy
RUN pip wheel --wheel-dir /wheels . \
    && ls -l /wheels

# ---- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MIGPROXY_HEALTHCHECK_URL=http://127.0.0.1:9464/metrics

# Install from the build stage's wheels only (no index), then check the entry point runs.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels migproxy \
    && migproxy --version \
    && python3 -c 'from migproxy.stream.framer import IMPLEMENTATION as I; assert I == "c", I'


# An unprivileged user with a fixed uid/gid (10001: outside the range of host system and
# login accounts), no home directory and no login shell.
RUN groupadd --system --gid 10001 migproxy \
    && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
       --home-dir /nonexistent --shell /usr/sbin/nologin migproxy \
    && mkdir -p /etc/migproxy/profiles /usr/local/share/doc/migproxy

COPY config/migproxy.example.toml /usr/local/share/doc/migproxy/migproxy.example.toml
COPY config/profiles/ /usr/local/share/migproxy/profiles/

# Numeric, so that runtimes enforcing runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
WORKDIR /

# 4444: the usual migration listen port (set by the configuration's [[route]] listen).
# 9464: Prometheus metrics (when bound to 0.0.0.0, see above).
EXPOSE 4444 9464

# No curl in the slim image: Python's urllib. Any HTTP error, refused connection or
# timeout makes urlopen raise, and python exit 1 (unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen(os.environ['MIGPROXY_HEALTHCHECK_URL'], timeout=4).read(1)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["migproxy"]
CMD ["--config", "/etc/migproxy/migproxy.toml"]

LABEL org.opencontainers.image.title="migproxy" \
      org.opencontainers.image.description="Rewriting proxy for QEMU live migration of ARM VMs across QEMU versions" \
      org.opencontainers.image.licenses="GPL-2.0-or-later"
