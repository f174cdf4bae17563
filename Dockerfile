# One image for every service: Ray head and workers, the search job and the API.
# PyPI's torch wheels carry their CUDA libraries; GPUs reach the container through the
# NVIDIA container runtime (see docker-compose.yml's device reservations).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ecab_tune ecab_tune
COPY serve serve
COPY search_spaces search_spaces
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" . \
 && useradd --create-home --uid 1000 ecab \
 && mkdir -p /app/runs /app/data && chown -R ecab /app
USER ecab

# Token auth stays on: every node and client needs the same RAY_AUTH_TOKEN.
ENV RAY_AUTH_MODE=token PYTHONUNBUFFERED=1
EXPOSE 6379 8265 10001 8000
CMD ["python", "-m", "ecab_tune.search", "--help"]
