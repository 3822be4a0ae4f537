"""dbt-cloud-cli (the `dbt-cloud` command) against baton emulator.

Runs the real click commands in-process; the only change is the URL scheme (the CLI hard-codes
https). Triggers a run and waits for it, lists runs, fetches run_results.json and cancels a run.
"""

import json
import os
import sys
import tempfile

os.environ["DBT_CLOUD_HOST"] = os.environ["EMULATOR_HOST"]
os.environ["DBT_CLOUD_API_TOKEN"] = os.environ["EMULATOR_TOKEN"]
os.environ["DBT_CLOUD_ACCOUNT_ID"] = os.environ["EMULATOR_ACCOUNT"]

from click.testing import CliRunner  # noqa: E402
from dbt_cloud.cli import dbt_cloud  # noqa: E402
from dbt_cloud.command.command import DbtCloudCommand  # noqa: E402

DbtCloudCommand.api_url = property(
    lambda self: f"http://{self.dbt_cloud_host}/api/{self._api_version}"
)

runner = CliRunner()


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def cli(*args):
    result = runner.invoke(dbt_cloud, list(args), catch_exceptions=False)
    check(result.exit_code == 0, f"dbt-cloud {' '.join(args)} exited {result.exit_code}: {result.output}")
    return result


# Trigger and wait (the CLI polls every 5 seconds until success).
out = cli("job", "run", "--job-id", "559062", "--cause", "dbt-cloud-cli third-party test", "--wait")
final = json.loads(out.stdout)
run_id = final["data"]["id"]
check(final["data"]["status"] == 10, f"the run ends in success: {final['data']['status']}")

# List runs.
listed = json.loads(cli("run", "list", "--job-id", "559062", "--order-by", "-id", "--limit", "10").stdout)
check(listed["data"][0]["id"] == run_id, "newest run first")
check(listed["extra"]["pagination"]["count"] == len(listed["data"]), "pagination count is the page size")
paged = json.loads(cli("run", "list", "--paginate").stdout)
check(any(r["id"] == run_id for r in paged["data"]), "the run is in the paginated list")

# Artifacts.
paths = json.loads(cli("run", "list-artifacts", "--run-id", str(run_id)).stdout)["data"]
check("run_results.json" in paths, f"run_results.json is listed: {paths}")
target = os.path.join(tempfile.mkdtemp(), "run_results.json")
cli("run", "get-artifact", "--run-id", str(run_id), "--path", "run_results.json", "-f", target)
with open(target) as f:
    results = json.load(f)
check(all(r["status"] == "success" for r in results["results"]), "every model succeeded")
check(results["metadata"]["env"]["DBT_CLOUD_RUN_ID"] == str(run_id), "the file belongs to the run")

# Cancel a run waiting behind a long one.
cli("job", "run", "--job-id", "559064", "--cause", "long")
queued = json.loads(cli("job", "run", "--job-id", "559064", "--cause", "behind it").stdout)["data"]["id"]
cancelled = json.loads(cli("run", "cancel", "--run-id", str(queued)).stdout)
check(cancelled["data"]["status"] == 30, "a queued run comes back cancelled")
got = json.loads(cli("run", "get", "--run-id", str(queued)).stdout)
check(got["data"]["is_cancelled"] is True, "and stays cancelled")

print("dbt-cloud-cli against baton emulator: OK")
