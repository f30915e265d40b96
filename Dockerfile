# Quantum Trader: the same command as `make run`, as a non-root user.
# Pinned to an exact release, not the floating 3.11-slim: rebuilds get the same interpreter and Debian
# base until someone bumps this line (a digest would pin harder: add @sha256:... where it can be checked).
# The suite was last run on 3.11.7; 3.11.14 is a later security release of the same line.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/quantum.db \
    FORWARDED_ALLOW_IPS=127.0.0.1

RUN useradd --create-home --uid 10001 quantum && mkdir /data && chown quantum /data
WORKDIR /srv/quantum-trader

COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
# torch from its CPU-only index: the default wheel pulls several GB of CUDA libraries.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install .

USER quantum
EXPOSE 8000
# Liveness via /health with the stdlib (slim images have no curl); any error or non-2xx exits 1.
# The start period covers the migrations and loading the champion model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# API_KEY must be given (e.g. docker run -e API_KEY=...); set FORWARDED_ALLOW_IPS to the proxy's address.
CMD ["sh", "-c", "alembic upgrade head && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --proxy-headers"]
