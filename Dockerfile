# One image for the API and the workers (docker-compose.yml picks the command).
# CPU torch by default; for GPU workers build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BOLAB_REDIS_URL=redis://redis:6379/0

WORKDIR /app
# torch first, from its own index: the layer survives changes to the project's code.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY bo_engine ./bo_engine
COPY bolab ./bolab
COPY service ./service
COPY worker ./worker
COPY openapi ./openapi
COPY examples ./examples
# frames: the API answers format=parquet; mlflow: it exports to BOLAB_MLFLOW_TRACKING_URI.
RUN pip install ".[frames,mlflow]"

RUN useradd --create-home --uid 1000 bolab
USER bolab
# Compile the engine's CPU loop (numba) into the image, so no worker compiles it at start-up.
ENV NUMBA_CACHE_DIR=/home/bolab/.cache/numba
RUN python -c "from bo_engine.loop import warm_up; warm_up()"
EXPOSE 8000
CMD ["bolab", "api", "--host", "0.0.0.0", "--port", "8000"]
