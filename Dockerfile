# The hailstream image: one image for every process (topics, train, worker, trainer, replay).
#   docker build -t hailstream .
#   docker run --rm hailstream hailstream --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# torch first, from the PyTorch CPU index: the PyPI wheel would pull a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY stream ./stream
RUN pip install . \
    && useradd --create-home --uid 10001 hailstream \
    && mkdir -p /models /data \
    && chown hailstream /models

USER hailstream
# Checkpoints live in the /models volume; data sets are mounted read-only at /data. Metrics bind
# to 127.0.0.1 unless HAILSTREAM_METRICS_BIND says otherwise (docker-compose.yml sets 0.0.0.0).
ENV HAILSTREAM_MODEL_DIR=/models \
    HAILSTREAM_DATA_DIR=/data
EXPOSE 9464
CMD ["hailstream", "--help"]
