"""A real Prometheus scraping a bench's services, so the bench measures them while watched.

    with scraping({"kuno-standard": ["127.0.0.1:4001"]}, every=5) as prometheus: ...

`--scrape-every SECONDS` of bench.standard_node and bench.master_throughput (0, the
default: none). Debian's prometheus binary (.venv/bin/prometheus, scripts/setup-promtool:
the version images/prometheus runs) listens on a free 127.0.0.1 port with its data in a
temporary directory, scrapes each target's /metrics every `every` seconds from start to
end, and is stopped at the end; how often it scraped each target, how long a scrape took
and the CPU time Prometheus itself used are printed, so a run shows that it was watched
and what watching cost.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.pouchdb import free_port

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / ".venv" / "bin" / "prometheus"
READY_WITHIN = 30.0  # seconds


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def _query(base: str, expression: str) -> list[dict]:
    status, body = _get(f"{base}/api/v1/query?query={urllib.parse.quote(expression)}")
    return json.loads(body)["data"]["result"] if status == 200 else []


@contextmanager
def scraping(targets: dict[str, list[str]], every: float) -> Iterator[str | None]:
    """Prometheus scraping {job: [host:port, ...]} every `every` s; yields its URL.

    every <= 0 yields None and starts nothing. RuntimeError when it is not ready within
    READY_WITHIN seconds (its log ends the message).
    """
    if every <= 0:
        yield None
        return
    if not PROMETHEUS.exists():
        subprocess.run([str(REPO / "scripts" / "setup-promtool")], check=True, timeout=300)
    with tempfile.TemporaryDirectory(prefix="kuno-bench-prometheus-") as tmp:
        root = Path(tmp)
        port = free_port()
        # Itself too, for the CPU time it used (process_cpu_seconds_total).
        jobs = {**targets, "prometheus": [f"127.0.0.1:{port}"]}
        config = {
            "global": {"scrape_interval": f"{every:g}s", "scrape_timeout": f"{min(every, 10):g}s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in jobs.items()
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))
        base = f"http://127.0.0.1:{port}"
        log = (root / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + READY_WITHIN
            while _get(f"{base}/-/ready")[0] != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "prometheus.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"prometheus not ready on {base}: {tail}")
                time.sleep(0.2)
            print(f"# prometheus on {base}: scraping {targets} every {every:g} s", flush=True)
            yield base
            scrapes = _query(base, 'count_over_time(up{job!="prometheus"}[1d])')
            durations = 'avg_over_time(scrape_duration_seconds{job!="prometheus"}[1d])'
            seconds = {
                r["metric"]["instance"]: float(r["value"][1]) * 1000
                for r in _query(base, durations)
            }
            cpu = _query(base, 'process_cpu_seconds_total{job="prometheus"}')
            print(
                "# prometheus scraped: "
                + ", ".join(
                    f"{r['metric']['instance']} {r['value'][1]} times"
                    f" ({seconds.get(r['metric']['instance'], float('nan')):.1f} ms each)"
                    for r in scrapes
                )
                + (f"; its own CPU: {float(cpu[0]['value'][1]):.2f} s" if cpu else ""),
                flush=True,
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
