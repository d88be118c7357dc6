# One image for every Metronome process: web, scheduler worker, tenant workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# collectstatic needs settings to load, not a database or real secret.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=postgres://x@localhost/x \
    python manage.py collectstatic --noinput

RUN useradd --system --uid 10001 metronome
USER metronome

EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
