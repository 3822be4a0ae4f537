"""apache-airflow-providers-dbt-cloud's DbtCloudHook against baton emulator, without a running Airflow.

The connection comes from the AIRFLOW_CONN_DBT_CLOUD_DEFAULT environment variable; the only change to
the hook is the URL scheme (it hard-codes https). Triggers a run and waits for it, lists runs with
their trigger, fetches run_results.json, reruns a failed job from its failure, and cancels runs.
"""

import json
import os
import sys
import tempfile

HOST = os.environ["EMULATOR_HOST"]
TOKEN = os.environ["EMULATOR_TOKEN"]
ACCOUNT = int(os.environ["EMULATOR_ACCOUNT"])

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW_CONN_DBT_CLOUD_DEFAULT"] = json.dumps(
    {"conn_type": "dbt_cloud", "host": HOST, "login": str(ACCOUNT), "password": TOKEN}
)

from airflow.providers.dbt.cloud.hooks.dbt import DbtCloudHook, DbtCloudJobRunStatus  # noqa: E402

OK, ERROR, CANCELLED = (
    DbtCloudJobRunStatus.SUCCESS.value,
    DbtCloudJobRunStatus.ERROR.value,
    DbtCloudJobRunStatus.CANCELLED.value,
)


class PlainHttpDbtCloudHook(DbtCloudHook):
    """DbtCloudHook, reaching dbt Cloud over http instead of the https it hard-codes."""

    def get_conn(self, *args, **kwargs):
        session = super().get_conn(*args, **kwargs)
        self.base_url = self.base_url.replace("https://", "http://", 1)
        return session


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


hook = PlainHttpDbtCloudHook()

# Trigger a run and wait for it.
response = hook.trigger_job_run(job_id=559062, cause="airflow third-party test")
run = response.json()["data"]
run_id = run["id"]
check(run["status"] == 1, f"a new run is queued, not {run['status']}")
check(
    hook.wait_for_job_run_status(run_id, expected_statuses=OK, check_interval=1, timeout=120),
    "the run ends in success",
)

# List runs (paginated by the hook) with their trigger.
pages = hook.list_job_runs(job_definition_id=559062, include_related=["trigger"], order_by="-id")
runs = [r for page in pages for r in page.json()["data"]]
mine = [r for r in runs if r["id"] == run_id]
check(len(mine) == 1, "the run is listed")
check(mine[0]["trigger"]["cause"] == "airflow third-party test", "the trigger's cause comes back")
one = hook.get_job_run(run_id=run_id, include_related=["job", "trigger"]).json()["data"]
check(one["job"]["id"] == 559062 and one["trigger"]["id"] == run["trigger_id"], "include_related job,trigger")

# Artifacts.
paths = hook.list_job_run_artifacts(run_id=run_id).json()["data"]
check("run_results.json" in paths, f"run_results.json is listed: {paths}")
results = hook.get_job_run_artifact(run_id=run_id, path="run_results.json").json()
check(
    [r["status"] for r in results["results"]] == ["success"] * 3,
    "run_results.json holds the three models, all successful",
)

# A job that fails once: the failure, then a rerun from the failed step through retry_from_failure.
failed = hook.trigger_job_run(job_id=559063, cause="first attempt").json()["data"]["id"]
check(
    not hook.wait_for_job_run_status(failed, expected_statuses=OK, check_interval=1, timeout=120),
    "the first attempt fails",
)
check(hook.get_job_run_status(failed) == ERROR, "status 20")
rerun = hook.trigger_job_run(job_id=559063, cause="second attempt", retry_from_failure=True)
rerun_id = rerun.json()["data"]["id"]
check(rerun_id != failed, "a new run")
check(
    hook.wait_for_job_run_status(rerun_id, expected_statuses=OK, check_interval=1, timeout=120),
    "the rerun succeeds",
)

# Cancel: a queued run behind a long one ends at once, the running one shortly after.
running = hook.trigger_job_run(job_id=559064, cause="long").json()["data"]["id"]
queued = hook.trigger_job_run(job_id=559064, cause="behind it").json()["data"]["id"]
hook.cancel_job_run(run_id=queued)
check(hook.get_job_run_status(queued) == CANCELLED, "a queued run is cancelled at once")
hook.cancel_job_run(run_id=running)
check(
    hook.wait_for_job_run_status(running, expected_statuses=CANCELLED, check_interval=1, timeout=60),
    "the running run ends cancelled",
)

print("airflow DbtCloudHook against baton emulator: OK")
