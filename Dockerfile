# tbptt-service: docker build -t tbptt-service . && docker run -e TBPTT_API_KEYS=ops:<a key of 16+ chars> -p 8000:8000 -v tbptt-data:/data tbptt-service
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /venv
ENV PATH=/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CPU-only PyTorch, pinned, first: a bare "torch" requirement would pull a multi-GB CUDA build. Another index
# (a mirror, or PyPI plus local wheels from a mounted pip configuration): --build-arg TORCH_INDEX=... (README).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
RUN pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 tbptt && mkdir /data && chown tbptt:tbptt /data
COPY --from=build /venv /venv
# Listen on every interface of the container; keys are required there (see docker-compose.yml).
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 TBPTT_HOST=0.0.0.0 TBPTT_PORT=8000 TBPTT_DATA_DIR=/data
USER 10001
WORKDIR /home/tbptt
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TBPTT_PORT', '8000') + '/healthz', timeout=2)"]
# Exec form: tbptt is PID 1 and receives SIGTERM, and its graceful shutdown writes the final checkpoints.
CMD ["tbptt", "serve"]
