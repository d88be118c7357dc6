"""/healthz (database, migrations, scheduler heartbeat) and /metrics."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring import health, metrics
from scheduler.models import SchedulerTick, Task, TaskRun, WorkerInfo
from scheduler.tick import run_tick

PERIOD = 60


@pytest.fixture(autouse=True)
def _period(settings):
    settings.SCHEDULER_PERIOD = PERIOD
    settings.METRICS_TOKEN = ""


def scheduler_worker(heartbeat_age: dt.timedelta, queues: list[str] | None = None) -> int:
    """A procrastinate worker row plus our WorkerInfo, as a running worker leaves them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (%s) RETURNING id",
            [timezone.now() - heartbeat_age],
        )
        worker_id = cursor.fetchone()[0]
    WorkerInfo.objects.create(id=worker_id, name="scheduler", queues=queues)
    return worker_id


@pytest.fixture(autouse=True)
def _live_scheduler_worker(request):
    """Most tests here are about other checks: give them a live scheduler worker."""
    if "no_worker" not in request.keywords and "django_db" in request.keywords:
        request.getfixturevalue("db")
        scheduler_worker(dt.timedelta(seconds=2), ["scheduler"])


def tick(age: dt.timedelta, duration: float = 0.25) -> SchedulerTick:
    started = timezone.now() - age
    return SchedulerTick.objects.create(
        tick_time=started,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=duration),
    )


# ----------------------------------------------------------------------------- /healthz


@pytest.mark.django_db
def test_healthy_without_login_and_without_tenant_data(client, tenant):
    tick(dt.timedelta(seconds=5))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "failing": [],
        "checks": {
            "database": "ok",
            "migrations": "ok",
            "scheduler": "ok",
            "scheduler_worker": "ok",
        },
    }
    assert tenant.name not in response.content.decode()
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


@pytest.mark.django_db
def test_no_tick_yet_is_unhealthy(client):
    SchedulerTick.objects.all().delete()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and body["failing"] == ["scheduler"]
    assert "no scheduler tick recorded yet" in body["checks"]["scheduler"]
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"


@pytest.mark.django_db
def test_a_tick_older_than_two_periods_is_unhealthy(client):
    tick(dt.timedelta(seconds=2 * PERIOD + 1))
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["scheduler"]
    assert "limit 120s" in body["checks"]["scheduler"]

    tick(dt.timedelta(seconds=2 * PERIOD - 10))  # the latest tick is what counts
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_the_limit_follows_scheduler_period(client, settings):
    tick(dt.timedelta(seconds=30))
    settings.SCHEDULER_PERIOD = 10
    assert client.get("/healthz").json()["failing"] == ["scheduler"]
    settings.SCHEDULER_PERIOD = 20
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_an_unapplied_migration_is_unhealthy(client):
    tick(dt.timedelta(seconds=1))
    app_label, name = sorted(MigrationExecutor(connection).loader.graph.leaf_nodes())[0]
    MigrationRecorder.Migration.objects.filter(app=app_label, name=name).delete()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["migrations"]
    assert f"1 unapplied migration(s): {app_label}.{name}" in body["checks"]["migrations"]


@pytest.mark.django_db
def test_an_unreachable_database_is_unhealthy(client, monkeypatch):
    def refused() -> str:
        raise OperationalError('connection to server at "db.internal" failed: refused')

    monkeypatch.setitem(health.CHECKS, "database", refused)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database", "migrations", "scheduler", "scheduler_worker"]
    assert body["checks"]["database"] == "database error (OperationalError)"
    assert "db.internal" not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.no_worker
@pytest.mark.parametrize(
    ("age", "queues", "message"),
    [
        (None, None, "no worker serves queue 'scheduler'"),
        (40, ["scheduler"], "last heartbeat was 40s ago (limit 25s)"),
        (2, ["1", "2"], "no worker serves queue 'scheduler'"),
    ],
)
def test_a_frozen_or_missing_scheduler_worker_is_unhealthy(client, age, queues, message):
    tick(dt.timedelta(seconds=1))
    if age is not None:
        scheduler_worker(dt.timedelta(seconds=age), queues)
    body = client.get("/healthz").json()
    assert body["failing"] == ["scheduler_worker"]
    assert message in body["checks"]["scheduler_worker"]


@pytest.mark.django_db
@pytest.mark.no_worker
def test_an_all_queues_worker_serves_the_scheduler(client):
    tick(dt.timedelta(seconds=1))
    scheduler_worker(dt.timedelta(seconds=3), None)
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405


# ----------------------------------------------------------------------------- /metrics


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.mark.django_db
def test_metrics_is_open_without_metrics_token(client):
    samples = scrape(client)
    assert ("metronome_taskrun_lateness_runs", ()) in samples


@pytest.mark.django_db
def test_metrics_token_requires_the_bearer_header(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    wrong = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape-token"})
    for headers in wrong:
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"metronome_" not in response.content
    assert scrape(client, Authorization="Bearer s3cret-scrape-token")


@pytest.mark.django_db
def test_metrics_unavailable_database_is_503(client, monkeypatch):
    def broken(self):
        raise OperationalError("server closed the connection")
        yield  # pragma: no cover

    monkeypatch.setattr(metrics.MetronomeCollector, "collect", broken)
    response = client.get("/metrics")
    assert response.status_code == 503
    assert b"OperationalError" in response.content


def test_metrics_report_jobs_ticks_lateness_and_misses(client, clean_jobs, probe_task, tenant):
    now = timezone.now().replace(microsecond=0)
    tasks = [probe_task("* * * * *") for _ in range(3)]
    run_tick(max(task.next_run_at for task in tasks))  # three jobs in the tenant's queue
    TaskRun.objects.all().delete()
    Task.objects.filter(pk=tasks[0].pk).update(missed_count=3, skipped_count=1)
    Task.objects.filter(pk=tasks[1].pk).update(missed_count=2, skipped_count=4)
    SchedulerTick.objects.all().delete()
    tick(dt.timedelta(seconds=30), duration=0.5)
    tick(dt.timedelta(seconds=90), duration=9)  # older: not the latest

    # Lateness 1 s, 2 s and 10 s, started in the last hour; the retried run counts its first
    # attempt (4 s late), not its latest one; a run started two hours ago is left out.
    due = now - dt.timedelta(minutes=10)
    for task, late in zip(tasks, (1, 2, 10), strict=True):
        TaskRun.objects.create(
            task=task,
            tenant=tenant,
            scheduled_for=due,
            started_at=due + dt.timedelta(seconds=late),
            status="succeeded",
        )
    first = (due + dt.timedelta(minutes=1, seconds=4)).isoformat()
    TaskRun.objects.create(
        task=tasks[0],
        tenant=tenant,
        scheduled_for=due + dt.timedelta(minutes=1),
        started_at=due + dt.timedelta(minutes=5),
        attempts=2,
        attempt_log=[{"attempt": 1, "started_at": first}, {"attempt": 2}],
        status="succeeded",
    )
    old = now - dt.timedelta(hours=2)
    TaskRun.objects.create(
        task=tasks[1],
        tenant=tenant,
        scheduled_for=old,
        started_at=old + dt.timedelta(seconds=500),
        status="succeeded",
    )

    samples = scrape(client)

    queue = tenant.queue_name
    assert samples[("metronome_jobs", (("queue", queue), ("status", "todo")))] == 3
    assert samples[("metronome_scheduler_last_tick_duration_seconds", ())] == 0.5
    assert 29 <= samples[("metronome_scheduler_last_tick_age_seconds", ())] < 60
    assert samples[("metronome_taskrun_lateness_runs", ())] == 4
    lateness = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "metronome_taskrun_lateness_seconds"
    }
    # [1, 2, 4, 10]: median 3, p95 interpolated 4 + 0.85 * 6, maximum 10.
    assert lateness == pytest.approx({"0.5": 3.0, "0.95": 9.1, "1": 10.0})
    assert samples[("metronome_task_missed_ticks", ())] == 5
    assert samples[("metronome_task_skipped_ticks", ())] == 5


@pytest.mark.django_db
def test_metrics_without_ticks_or_runs(client):
    SchedulerTick.objects.all().delete()
    samples = scrape(client)
    names = {name for name, _ in samples}
    assert "metronome_scheduler_last_tick_age_seconds" not in names
    assert "metronome_taskrun_lateness_seconds" not in names
    assert samples[("metronome_taskrun_lateness_runs", ())] == 0
