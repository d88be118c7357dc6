"""TaskRun follows its job's status from inside PostgreSQL (see scheduler/middleware.py)."""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION metronome_sync_task_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'doing' THEN
        UPDATE scheduler_taskrun
           SET status = 'doing', started_at = now(), finished_at = NULL,
               attempts = NEW.attempts + 1,
               attempt_log = attempt_log || jsonb_build_array(jsonb_build_object(
                   'attempt', NEW.attempts + 1, 'started_at', now()::text,
                   'worker', NEW.worker_id))
         WHERE job_id = NEW.id;
    ELSIF NEW.status IN ('succeeded', 'failed', 'cancelled', 'aborted') THEN
        UPDATE scheduler_taskrun
           SET status = CASE WHEN NEW.status = 'aborted' THEN 'cancelled'
                             ELSE NEW.status::text END,
               finished_at = CASE WHEN OLD.status = 'doing' THEN now() ELSE finished_at END,
               error = CASE WHEN NEW.status = 'succeeded' THEN '' ELSE error END,
               attempt_log = CASE
                   WHEN OLD.status = 'doing' AND jsonb_array_length(attempt_log) > 0
                        AND NOT (attempt_log -> -1) ? 'outcome'
                   THEN jsonb_set(attempt_log,
                                  ARRAY[(jsonb_array_length(attempt_log) - 1)::text],
                                  (attempt_log -> -1) || jsonb_build_object(
                                      'finished_at', now()::text,
                                      'outcome', NEW.status::text))
                   ELSE attempt_log END
         WHERE job_id = NEW.id;
    ELSIF NEW.status = 'todo' THEN
        UPDATE scheduler_taskrun SET status = 'todo', finished_at = NULL WHERE job_id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER metronome_sync_task_run
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION metronome_sync_task_run();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS metronome_sync_task_run ON procrastinate_jobs;
DROP FUNCTION IF EXISTS metronome_sync_task_run();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0003_taskrun_time_indexes"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
