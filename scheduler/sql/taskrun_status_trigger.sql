-- TaskRun follows its procrastinate job's status, inside PostgreSQL.
--
-- Trigger metronome_sync_task_run fires AFTER UPDATE OF status ON procrastinate_jobs, once
-- per row whose status really changed, in the transaction that changed it (a worker
-- fetching, finishing or retrying a job; cancel, abort or retry from admin). It updates
-- the TaskRun of that job (scheduler_taskrun.job_id):
--   doing                          -> status doing, started_at, attempts, a new attempt_log entry
--   succeeded/failed/cancelled/aborted -> the final status (aborted counts as cancelled),
--                                     finished_at, and the open attempt_log entry closed
--                                     unless the worker's middleware closed it already
--   todo (a retry)                 -> status todo, finished_at cleared
--
-- Installed by migration 0007 (and again by `manage.py migrate` whenever the installed
-- copy differs from this file); system check scheduler.E001 compares the installed function
-- body with the one below. Edited this file? Add a migration that runs it (like 0007), so
-- the change reaches databases in migration order.

CREATE OR REPLACE FUNCTION metronome_sync_task_run() RETURNS trigger LANGUAGE plpgsql AS $$
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

DROP TRIGGER IF EXISTS metronome_sync_task_run ON procrastinate_jobs;

CREATE TRIGGER metronome_sync_task_run
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION metronome_sync_task_run();
