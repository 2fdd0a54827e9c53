"""A Celery app for test_integration_celery.py: its worker runs as a real prefork process.

Configured by the environment the test sets: the broker folder, the collector and the queue.
"""

from __future__ import annotations

import os
import signal
import time

from celery import Celery

import durable_analytics as analytics
from durable_analytics.integrations.celery import setup


def make_app(broker_dir: str) -> Celery:
    """The app on a filesystem broker in ``broker_dir`` (the test sends with one too)."""
    app = Celery("celery_tasks", broker="filesystem://")
    app.conf.update(
        broker_transport_options={
            "data_folder_in": broker_dir,
            "data_folder_out": broker_dir,
            "control_folder": os.path.join(broker_dir, "control"),
            "polling_interval": 0.05,
        },
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
    )
    return app


app = make_app(os.environ["DA_TEST_BROKER_DIR"])

analytics.write_key = "celery-key"
analytics.endpoint = os.environ["DA_TEST_ENDPOINT"]
analytics.queue_path = os.environ["DA_TEST_QUEUE"]
# Nothing is sent on a timer: what arrives was sent by a pool process leaving normally (a
# process killed or terminated sends nothing itself; another one finds its messages on disk).
analytics.flush_at = 10_000
analytics.flush_interval = 3600.0
analytics.exit_timeout = 10.0

setup(task_context=True)


@app.task(name="record")
def record(n: int) -> None:
    analytics.track("worker-user", "Task Ran", {"n": n})


@app.task(name="stuck", soft_time_limit=0.5)
def stuck(n: int) -> None:
    """Records, then outlives its time limit: SoftTimeLimitExceeded ends it.

    (A hard ``time_limit`` ends in SIGKILL, the case of ``killed`` below. It is not run here:
    billiard may kill the process while it holds the pool's result pipe lock, a race of its
    own that hangs the pool on a loaded machine.)"""
    analytics.track("worker-user", "Task Stuck", {"n": n})
    time.sleep(60)


@app.task(name="killed")
def killed(n: int) -> None:
    """Records, then its process is killed outright (as by the kernel's OOM killer)."""
    analytics.track("worker-user", "Task Killed", {"n": n})
    os.kill(os.getpid(), signal.SIGKILL)
