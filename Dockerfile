# qtdog: the Gradio demo on 0.0.0.0:7860 (Hugging Face Spaces convention) and the `qtdog` CLI.
#   docker build -t qtdog .
#   docker run --rm -p 7860:7860 qtdog                         # demo at http://localhost:7860
#   docker run --rm -v "$PWD:/data" qtdog predict /data/img.png # any other qtdog command
# Serving needs no torch: the demo and `qtdog predict` run the int8 ONNX graphs with
# onnxruntime, so the image holds the core SDK and gradio only (`qtdog[demo]`).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY constraints.txt ./
COPY pyproject.toml README.md ./
COPY qtdog_sdk/ qtdog_sdk/
COPY train/ train/
COPY serve/ serve/
# The same install as the README's first command (tests/test_dockerfile.py checks it),
# at the versions CI tests (constraints.txt).
# hadolint ignore=DL3013
RUN pip install ".[demo]" -c constraints.txt


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/qtdog/.cache/huggingface

# Spaces run containers as uid 1000.
RUN useradd --create-home --uid 1000 qtdog
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=1000:1000 examples/ examples/
USER 1000:1000

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]

ENTRYPOINT ["qtdog"]
CMD ["demo", "--host", "0.0.0.0", "--port", "7860"]
