-- Wakes workers when a job that holds a procrastinate lock stops running.
--
-- A tenant's concurrency limit puts its jobs on lock slots (scheduler/fairness.py). A worker
-- that found only lock-blocked jobs sleeps until a job is inserted or its polling interval
-- ends (5 s by default); the end of a job inserts nothing, so a limited tenant's backlog
-- would drain one job per polling interval. When a locked job leaves 'doing', this sends the
-- notification procrastinate sends for an inserted job, on the same channels, so listening
-- workers fetch again at once. scheduler/procrastinate_internals.py checks at start-up that
-- the installed procrastinate still uses these channel names and this payload.
CREATE OR REPLACE FUNCTION metronome_wake_lock_waiters()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    payload TEXT;
BEGIN
    SELECT json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text INTO payload;
    PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS metronome_wake_lock_waiters ON procrastinate_jobs;
CREATE TRIGGER metronome_wake_lock_waiters
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (OLD.status = 'doing' AND NEW.status <> 'doing' AND NEW.lock IS NOT NULL)
    EXECUTE FUNCTION metronome_wake_lock_waiters();
