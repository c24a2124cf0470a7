# abguard service image. Mirrors what CI runs (.ci/run -> make install): the same locked dependencies
# (requirements/runtime.lock is dev.lock less the development tools, at the same pins), installed the same
# way (--require-hashes, build.lock first, sdists built with --no-build-isolation), the same protoc step
# generating engine/api/v1, Python 3.11. No Docker engine runs where this is developed: keep it in step
# with the Makefile.

FROM python:3.11-slim AS build
# durable-rules ships as an sdist with a C extension, and abguard's core is compiled by mypyc
# (setup.py, ABGUARD_MYPYC=1, as `make install` does): compile both here, not in the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first, from the lock alone (a layer that changes only with the lock): pip and setuptools
# from build.lock, then everything else by hash; durable-rules' sdist builds with that setuptools, so no
# unhashed build dependency is downloaded. mypy and the stubs are the `compile` extra, for the mypyc build.
COPY requirements/build.lock requirements/runtime.lock ./requirements/
RUN python -m venv /opt/abguard \
    && /opt/abguard/bin/pip install --no-cache-dir --require-hashes -r requirements/build.lock \
    && /opt/abguard/bin/pip install --no-cache-dir --require-hashes --no-build-isolation -r requirements/runtime.lock
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY engine ./engine
# abguard itself with --no-deps: everything it needs came from the lock above.
RUN /opt/abguard/bin/python -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. \
        protos/engine/api/v1/risk.proto \
    && ABGUARD_MYPYC=1 /opt/abguard/bin/pip install --no-cache-dir --no-build-isolation --no-deps . \
    && /opt/abguard/bin/pip uninstall --yes mypy types-PyYAML types-jsonschema types-protobuf types-setuptools \
    && cd / && /opt/abguard/bin/python -c "from engine.compiled import is_compiled; assert is_compiled()" \
    && /opt/abguard/bin/abguard policy facts > /dev/null

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app abguard \
    && mkdir -p /data && chown abguard:abguard /data
COPY --from=build /opt/abguard /opt/abguard
COPY --chown=abguard:abguard policies /app/policies
# the policy's own test cases read these (../../scenarios from policies/tests): a reload runs them first
COPY --chown=abguard:abguard scenarios/*.jsonl /app/scenarios/
ENV PATH=/opt/abguard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ABGUARD_POLICIES=/app/policies
USER abguard
WORKDIR /app
VOLUME ["/data"]
# 50051 gRPC; 8080 HTTP/JSON, /metrics and the dashboard when started with --http 0.0.0.0:8080
# (or ABGUARD_HTTP), as deploy/kubernetes/abguard.yaml does
EXPOSE 50051 8080
# The port opens and serves at once: each test's state is rebuilt from the decision log on its
# first call. Health says NOT_SERVING only while the log (or --state) cannot be written.
# SIGHUP (docker kill -s HUP) reloads the policies; so does a change in /app/policies.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --start-interval=2s --retries=3 \
    CMD ["abguard", "health", "--server", "127.0.0.1:50051"]
# Rollback integrations by environment (README "Rollbacks as a tracked process"): ABGUARD_FLAGS
# (a flags config mounted into the container), ABGUARD_ALERTMANAGER_URL, ABGUARD_NOTIFY_WEBHOOK
# with its ABGUARD_NOTIFY_WEBHOOK_SECRET. Rollback records and the outbox live in /data too.
# Replicas: ABGUARD_LOG=postgresql://... and ABGUARD_STATE=redis://... (README "Replicas"); the states they
# share are sealed with ABGUARD_STATE_KEY (hex, from a Secret) or ABGUARD_STATE_KEY_FILE, else a key the
# database keeps (docs/state.md).
# Who may do what (README "Who may do what"): ABGUARD_AUTH=/etc/abguard/auth.yaml, a mounted Secret;
# TLS and mTLS: ABGUARD_TLS_CERT, ABGUARD_TLS_KEY, ABGUARD_TLS_CLIENT_CA (mounted files, reloaded when
# they change). Without ABGUARD_AUTH anyone who reaches the ports may do anything.
ENTRYPOINT ["abguard", "serve", "--listen", "0.0.0.0:50051", "--data-dir", "/data"]
