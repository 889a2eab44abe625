# One image recipe for every Trimtab service, built from the repository root:
#   docker build --build-arg SERVICE=optimizer -t trimtab/optimizer .
# SERVICE is the uv workspace member under services/ (market-data, drift-monitor, optimizer, risk,
# explainer, audit); the package is trimtab-$SERVICE and the app factory
# trimtab.<SERVICE with - as _>.app:create. docker-compose.yml builds all six from this file.
ARG SERVICE

FROM python:3.11-slim AS build
ARG SERVICE
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /bin/uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY shared ./shared
COPY services ./services
RUN test -n "$SERVICE" && test -d "services/$SERVICE" \
    && uv sync --frozen --no-dev --package "trimtab-$SERVICE" --no-editable
# The optimizer library's structured solver (trimtab/rebalance/ipm.c) is compiled on first use;
# here, once, into /app/cache, so the runtime image needs no compiler. Services without the
# library skip it; without it the library would fall back to Clarabel (slower, same answers).
ENV TRIMTAB_CACHE_DIR=/app/cache
RUN mkdir -p /app/cache && if /app/.venv/bin/python -c "import trimtab.rebalance" 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
      && /app/.venv/bin/python -c "from trimtab.rebalance import ipm; assert ipm.available(), ipm.unavailable_reason()"; \
    fi && chmod -R a+rX /app/cache

FROM python:3.11-slim
ARG SERVICE
RUN useradd --system --uid 10001 trimtab
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/cache /app/cache
USER trimtab
ENV PATH=/app/.venv/bin:$PATH SERVICE_NAME=$SERVICE HTTP_HOST=0.0.0.0 HTTP_PORT=8000 TRIMTAB_CACHE_DIR=/app/cache
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/readyz'); sys.exit(0)"
# The factory of trimtab.<module>.app, module = SERVICE with "-" as "_" (trimtab.<module>.app:create).
CMD ["sh", "-c", "exec uvicorn --factory \"trimtab.$(echo \"$SERVICE_NAME\" | tr - _).app:create\" --host $HTTP_HOST --port $HTTP_PORT"]
