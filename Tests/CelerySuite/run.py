"""Runs Celery 5.7's own integration suite (t/integration from the sdist, unmodified) against a worker.

    run.py --worker BIN [--shards N] [--files test_canvas.py ...] [-k EXPR] [--expect not-passing.txt]
    run.py --python [...]          the same selection against Celery's own worker (the suite's stock fixture)

The selection is collected once, then split over N pytest sessions that run side by side, each with its own
throw-away redis-server and its own worker (most of a failing test's time is a wait for its timeout, so sessions in
parallel cut the wall time, not the work). Prints `N passed, M failed` and, with --expect, compares the failures
with the committed list: a test that fails and is not on the list fails the run; one on the list that passes is
reported (take it off the list).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CELERY_VERSION = "5.7.0"
DEFAULT_FILES = ["test_canvas.py", "test_tasks.py", "test_inspect.py"]


def log(message):
    print(f"[celery-suite] {message}", flush=True)


def sdist(work):
    """The extracted celery sdist (downloaded by pip once, kept in `work`)."""
    tree = work / f"celery-{CELERY_VERSION}"
    if (tree / "t" / "integration" / "conftest.py").exists():
        return tree
    work.mkdir(parents=True, exist_ok=True)
    archive = work / f"celery-{CELERY_VERSION}.tar.gz"
    if not archive.exists():
        log(f"downloading the celery {CELERY_VERSION} sdist")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", "--dest", str(work), f"celery=={CELERY_VERSION}"],
            check=True, stdin=subprocess.DEVNULL,
        )
    subprocess.run(["tar", "xzf", str(archive), "-C", str(work)], check=True)
    return tree


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_command(args, extra):
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "celery.contrib.pytest",
               "-p", "swift_worker_plugin"]
    if args.timeout:
        command += [f"--timeout={args.timeout}"]
    return command + extra


def environment(args, tree):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(tree)])
    env.pop("CELERY_SUITE_WORKER", None)
    if not args.python:
        env["CELERY_SUITE_WORKER"] = str(Path(args.worker).resolve())
    return env


def collect(args, tree):
    files = [f"t/integration/{name}" for name in args.files]
    command = pytest_command(args, ["--collect-only", "-q", *files] + (["-k", args.k] if args.k else []))
    out = subprocess.run(command, cwd=tree, env=environment(args, tree), capture_output=True, text=True)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if out.returncode not in (0, 5) or not ids:
        sys.stdout.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit("collection failed")
    return ids


def read_expected(path):
    """nodeid -> reason, from lines `nodeid  # reason` (blank lines and lines starting with # skipped)."""
    expected = {}
    if not path:
        return expected
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, _, reason = line.partition(" # ")
        expected[nodeid.strip()] = reason.strip()
    return expected


def shard(ids, expected, count):
    """Round-robin, the tests expected to fail (the slow ones: they wait out timeouts) spread on their own."""
    shards = [[] for _ in range(count)]
    failing = [i for i in ids if i in expected]
    passing = [i for i in ids if i not in expected]
    for index, nodeid in enumerate(failing):
        shards[index % count].append(nodeid)
    for index, nodeid in enumerate(passing):
        shards[(len(failing) + index) % count].append(nodeid)
    return [s for s in shards if s]


def junit_key(nodeid):
    parts = nodeid.split("::")
    module = parts[0][:-3].replace("/", ".")
    return (".".join([module] + parts[1:-1]), parts[-1])


def outcomes(junit_files):
    """(classname, name) -> passed | failed | skipped."""
    result = {}
    for path in junit_files:
        if not path.exists():
            continue
        for case in ElementTree.parse(path).getroot().iter("testcase"):
            key = (case.get("classname"), case.get("name"))
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            else:
                outcome = "passed"
            # A test with a failing teardown appears twice; any failure counts.
            if result.get(key) != "failed":
                result[key] = outcome
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help="the worker binary (a SwiftCelery.main executable)")
    parser.add_argument("--python", action="store_true", help="run against Celery's own worker")
    parser.add_argument("--shards", type=int, default=int(os.environ.get("CELERY_SUITE_SHARDS", "4")))
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES)
    parser.add_argument("-k", help="pytest -k expression")
    parser.add_argument("--expect", help="the committed list of tests that do not pass yet")
    parser.add_argument("--timeout", type=int, default=300, help="pytest-timeout per test (0: none)")
    parser.add_argument("--work", default=str(ROOT / ".build-celery-suite"))
    args = parser.parse_args()
    if not args.python and not args.worker:
        parser.error("--worker BIN or --python")
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH")

    work = Path(args.work)
    tree = sdist(work)
    expected = read_expected(args.expect)
    ids = collect(args, tree)
    shards = shard(ids, expected, max(1, args.shards))
    who = "Celery's own worker" if args.python else args.worker
    log(f"{len(ids)} tests from {', '.join(args.files)} in {len(shards)} sessions against {who}")

    runs = work / ("runs-python" if args.python else "runs-swift")
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    started = time.monotonic()
    sessions = []
    for index, selection in enumerate(shards):
        port = free_port()
        folder = runs / f"session-{index}"
        folder.mkdir()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        env = environment(args, tree)
        url = f"redis://127.0.0.1:{port}/0"
        env.update(TEST_BROKER=url, TEST_BACKEND=url, REDIS_HOST="127.0.0.1", REDIS_PORT=str(port),
                   CELERY_SUITE_WORKER_LOG=str(folder / "worker.log"))
        junit = folder / "junit.xml"
        with open(folder / "pytest.log", "wb") as output:
            # Let redis-server bind before the session's first connection.
            time.sleep(0.2)
            pytest = subprocess.Popen(
                pytest_command(args, ["-q", "-rfE", f"--junitxml={junit}", *selection]),
                cwd=tree, env=env, stdout=output, stderr=subprocess.STDOUT,
            )
        sessions.append((pytest, redis, junit, folder))
    for pytest, redis, _, folder in sessions:
        pytest.wait()
        redis.terminate()
        redis.wait()
    elapsed = time.monotonic() - started

    results = outcomes([junit for _, _, junit, _ in sessions])
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    regressions, fixed, missing = [], [], []
    for nodeid in ids:
        outcome = results.get(junit_key(nodeid))
        if outcome is None:
            outcome = "failed"
            missing.append(nodeid)
        counts[outcome] += 1
        if outcome == "failed" and nodeid not in expected:
            regressions.append(nodeid)
        if outcome == "passed" and nodeid in expected:
            fixed.append(nodeid)
    for nodeid in missing:
        log(f"no result (the session died?): {nodeid}")
    for nodeid in fixed:
        log(f"passes now; take it off the list: {nodeid}")
    for nodeid in regressions:
        log(f"FAILED (not on the list of tests that do not pass yet): {nodeid}")
    for nodeid in sorted(set(expected) - set(ids)):
        if not args.k:
            log(f"on the list but not collected: {nodeid}")
    log(f"logs: {runs}/session-*/pytest.log and worker.log")
    log(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"({len(ids)} tests, {elapsed:.0f} s, against {who})")
    if args.expect and regressions:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
