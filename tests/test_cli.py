"""The ``durable-analytics`` command, run as a real program against the real loopback collector.

Every subcommand runs in a subprocess (``python -m durable_analytics``, and the installed
console script once), on real queue files, and is judged by its exit status, its output and
what the collector received.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import requests
from cli_helpers import KEY, cli, deliver_in_process, fill, kill_into_dead_letters, stats

from durable_analytics import __version__
from durable_analytics.cli import build_parser
from durable_analytics.testing import Collector, Response

MISSING_KEY = (
    "durable-analytics: error: no write key: pass --write-key or set DURABLE_ANALYTICS_WRITE_KEY"
)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

WRITER = """
import json, sys
from durable_analytics.messages import Encoder, Track
from durable_analytics.store import MessageStore
store = MessageStore.open(sys.argv[1])
encoder = Encoder()
ids = []
for n in range(int(sys.argv[2])):
    encoded = encoder.encode(Track(user_id="writer", event="Raced", properties={"n": n}))
    store.append(encoded.json, encoded.size)
    ids.append(encoded.message_id)
print(json.dumps(ids))
"""


# --------------------------------------------------------------------------------------------
# The command itself


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["drain"],
        ["stats"],
        ["dead-letters"],
        ["dead-letters", "list"],
        ["dead-letters", "requeue"],
        ["dead-letters", "purge"],
        ["track"],
        ["identify"],
        ["page"],
        ["screen"],
        ["group"],
        ["alias"],
        ["collect"],
        ["demo"],
    ],
)
def test_every_subcommand_has_help_with_an_example(
    argv: List[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  durable-analytics " in out
    assert "usage: durable-analytics" in out


def test_console_script_and_module_both_run(env: Dict[str, str]) -> None:
    script = shutil.which("durable-analytics", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is not installed next to this Python"
    installed = subprocess.run(
        [script, "--version"], env=env, capture_output=True, text=True, timeout=30
    )
    assert (installed.returncode, installed.stdout.strip()) == (
        0,
        f"durable-analytics {__version__}",
    )
    module = cli("--version", env=env)
    assert (module.returncode, module.stdout.strip()) == (0, f"durable-analytics {__version__}")


def test_usage_errors_exit_2_in_one_line(env: Dict[str, str], queue_file: Path) -> None:
    result = cli("drain", "--queue", str(queue_file), "--timeout", "soon", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "durable-analytics drain: error: argument --timeout: 'soon' is not a number of seconds "
        "(see durable-analytics drain --help)"
    ]


def test_missing_write_key_exits_2_saying_what_to_set(
    env: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 1)
    drain = cli("drain", "--queue", str(queue_file), env=env)
    assert (drain.returncode, drain.stdout) == (2, "")
    assert drain.stderr == MISSING_KEY + "\n"
    track = cli("track", "--user-id", "u1", "--event", "E", env=env)
    assert (track.returncode, track.stderr) == (2, MISSING_KEY + "\n")
    assert stats(queue_file)["ready"] == 1


def test_missing_queue_and_bad_endpoint_exit_2(env: Dict[str, str], tmp_path: Path) -> None:
    nothing = cli("stats", env=env)
    assert nothing.returncode == 2
    assert "no queue file: pass --queue PATH or --write-key KEY" in nothing.stderr
    absent = cli("stats", "--queue", str(tmp_path / "absent.sqlite3"), env=env)
    assert absent.returncode == 2
    assert f"no queue file at {tmp_path / 'absent.sqlite3'} (from --queue)" in absent.stderr
    assert not (tmp_path / "absent.sqlite3").exists()
    bad = {**env, "DURABLE_ANALYTICS_WRITE_KEY": KEY, "DURABLE_ANALYTICS_ENDPOINT": "ftp://x"}
    result = cli("track", "--user-id", "u", "--event", "E", env=bad)
    assert result.returncode == 2
    assert "is not an http(s) URL" in result.stderr
    assert "(set by DURABLE_ANALYTICS_ENDPOINT)" in result.stderr


def test_flags_win_over_the_environment(
    keyed: Dict[str, str], collector: Collector, tmp_path: Path
) -> None:
    other = tmp_path / "other.sqlite3"
    ids = fill(other, 3)
    result = cli("drain", "--queue", str(other), "--write-key", "flag-key", "--json", env=keyed)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == str(other)
    assert collector.message_ids == set(ids)
    assert {r.write_key for r in collector.requests} == {"flag-key"}


def test_corrupt_queue_file_is_a_clean_error(env: Dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite" * 100)
    result = cli("stats", "--queue", str(junk), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("durable-analytics: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# drain


def test_drain_empties_the_queue(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    ids = fill(queue_file, 1200)
    result = cli("drain", "--json", env=keyed)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["emptied"] is True
    assert (summary["delivered"], summary["dead"], summary["left"]) == (1200, 0, 0)
    assert summary["stopped"] == "emptied"
    assert summary["requests"] == len(collector.requests) == 3  # batches of at most 500
    assert collector.message_ids == set(ids)
    assert collector.duplicates == 0
    assert {r.write_key for r in collector.requests} == {KEY}
    assert stats(queue_file)["ready"] == 0
    again = cli("drain", env=keyed)
    assert again.returncode == 0
    assert again.stdout.startswith("drain: delivered 0, dead-lettered 0, left 0, elapsed ")


def test_drain_against_a_failing_server_exits_1_and_keeps_everything(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 20)
    collector.set_default(503)
    started = time.monotonic()
    result = cli("drain", "--timeout", "1", "--json", env=keyed)
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["emptied"] is False
    assert (summary["delivered"], summary["left"]) == (0, 20)
    assert summary["stopped"] in ("timeout", "backoff")
    assert "HTTP 503" in summary["last_error"]
    assert collector.requests and not collector.message_ids
    after = stats(queue_file)
    assert (after["ready"], after["leased"], after["dead"]) == (20, 0, 0)
    human = cli("drain", "--timeout", "0.5", env=keyed)
    assert human.returncode == 1
    assert "left 20" in human.stdout and "HTTP 503" in human.stdout


def test_drain_with_a_refused_write_key_never_prints_it(
    env: Dict[str, str], queue_file: Path
) -> None:
    fill(queue_file, 5)
    with Collector(write_key="the-right-key") as strict:
        secret = "s3cr3t-wrong-key"
        result = cli(
            "drain", "--queue", str(queue_file), "--endpoint", strict.url,
            "--write-key", secret, "--timeout", "5",
            env=env,
        )  # fmt: skip
        assert result.returncode == 1
        assert "HTTP 401" in result.stdout
        assert secret not in result.stdout + result.stderr
        assert [r.write_key for r in strict.requests] == [secret]
    assert stats(queue_file)["ready"] == 5


def test_dry_run_sends_nothing_and_needs_no_write_key(
    env: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 30)
    size = stats(queue_file)["queued_bytes"]
    result = cli("drain", "--queue", str(queue_file), "--dry-run", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert (report["messages"], report["bytes"], report["batches"]) == (30, size, 1)
    limited = cli("drain", "--queue", str(queue_file), "--dry-run", "--max-messages", "7", env=env)
    assert limited.returncode == 0
    assert "would send 7 message(s)" in limited.stdout and "Nothing was sent" in limited.stdout
    assert collector.requests == []
    assert stats(queue_file)["ready"] == 30


def test_drain_max_messages_stops_early_and_says_so(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    ids = fill(queue_file, 30)
    result = cli("drain", "--max-messages", "10", "--json", env=keyed)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert (summary["delivered"], summary["left"], summary["stopped"]) == (10, 20, "max-messages")
    assert collector.message_ids == set(ids[:10])


def test_sigterm_stops_a_drain_after_the_batch_in_flight(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    fill(queue_file, 10_000)  # 20 batches: more than the uploads a drain keeps in flight
    collector.set_default(Response(200, delay=0.3))
    drain = subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", "drain", "--json"],
        env=keyed,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert collector.wait_for_requests(1, timeout=15)
    drain.send_signal(signal.SIGTERM)
    out, err = drain.communicate(timeout=15)
    assert drain.returncode == 130, err
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted"
    assert 0 < summary["left"] < 10_000
    after = stats(queue_file)
    assert after["leased"] == 0  # the batches in flight were settled, not abandoned
    assert after["ready"] == summary["left"] == 10_000 - len(collector.message_ids)


def test_drain_races_another_drain_and_a_writer(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    before = fill(queue_file, 2000)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(queue_file), "500"],
        env=keyed,
        stdout=subprocess.PIPE,
        text=True,
    )
    drains = [
        subprocess.Popen(
            [sys.executable, "-m", "durable_analytics", "drain", "--json"],
            env=keyed,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    written = json.loads(writer.communicate(timeout=60)[0])
    results = [drain.communicate(timeout=60) for drain in drains]
    assert writer.returncode == 0
    for drain, (out, err) in zip(drains, results):
        assert drain.returncode == 0, err
        assert json.loads(out)["left"] == 0
    delivered = sum(json.loads(out)["delivered"] for out, _ in results)
    assert delivered >= 2000
    final = cli("drain", "--json", env=keyed)
    assert final.returncode == 0
    assert collector.message_ids == set(before) | set(written)
    assert collector.duplicates == 0
    assert len(collector.messages) == 2500


# --------------------------------------------------------------------------------------------
# stats and dead letters


def test_stats_json_is_one_flat_object(keyed: Dict[str, str], queue_file: Path) -> None:
    fill(queue_file, 3)
    kill_into_dead_letters(queue_file, 1)
    result = cli("stats", "--json", env=keyed)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(queue_file)
    assert (data["ready"], data["leased"], data["dead"], data["dropped"]) == (2, 0, 1, 0)
    for key in ("ready", "leased", "dead", "dropped", "bytes"):
        assert type(data[key]) is int
    on_disk = sum(
        p.stat().st_size for p in queue_file.parent.iterdir() if p.name.startswith(queue_file.name)
    )
    assert 0 < data["bytes"] <= on_disk + 65536
    assert isinstance(data["oldest_age_seconds"], float) and data["oldest_age_seconds"] >= 0
    assert data["last_error"] == "HTTP 400: bad field"
    assert not any(isinstance(v, (dict, list)) for v in data.values())
    human = cli("stats", env=keyed)
    assert human.returncode == 0
    assert re.search(r"^ready +2$", human.stdout, re.M)
    assert re.search(r"^dead-lettered +1$", human.stdout, re.M)


def test_stats_of_an_empty_queue_has_null_age(env: Dict[str, str], queue_file: Path) -> None:
    fill(queue_file, 0)
    data = json.loads(cli("stats", "--queue", str(queue_file), "--json", env=env).stdout)
    assert (data["ready"], data["oldest_age_seconds"], data["last_error"]) == (0, None, None)


def test_dead_letters_list_requeue_purge(keyed: Dict[str, str], queue_file: Path) -> None:
    ids = fill(queue_file, 4)
    kill_into_dead_letters(queue_file, 3)
    listed = cli("dead-letters", "list", "--json", env=keyed)
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert len(letters) == 3 and [d["id"] for d in letters] == sorted(d["id"] for d in letters)
    assert [d["messageId"] for d in letters] == ids[:3]
    assert {(d["http_status"], d["reason"], d["type"]) for d in letters} == {
        (400, "HTTP 400: bad field", "track")
    }
    assert all(d["age_seconds"] >= 0 for d in letters)
    table = cli("dead-letters", "list", "--limit", "2", env=keyed)
    assert table.returncode == 0
    assert ids[0] in table.stdout and ids[2] not in table.stdout
    assert "(2 of 3 shown" in table.stdout

    unselected = cli("dead-letters", "requeue", env=keyed)
    assert unselected.returncode == 2
    assert "--all, --id N or --older-than" in unselected.stderr
    requeued = cli("dead-letters", "requeue", "--id", str(letters[0]["id"]), "--json", env=keyed)
    assert requeued.returncode == 0
    assert json.loads(requeued.stdout)["requeued"] == 1
    assert (stats(queue_file)["ready"], stats(queue_file)["dead"]) == (2, 2)

    refused = cli("dead-letters", "purge", "--all", env=keyed)
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert stats(queue_file)["dead"] == 2
    purged = cli("dead-letters", "purge", "--all", "--yes", "--json", env=keyed)
    assert purged.returncode == 0
    assert json.loads(purged.stdout)["purged"] == 2
    assert (stats(queue_file)["ready"], stats(queue_file)["dead"]) == (2, 0)
    assert cli("dead-letters", "list", env=keyed).stdout == "no dead letters\n"


# --------------------------------------------------------------------------------------------
# Events from the shell


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["track", "--user-id", "u1", "--event", "Backup Done", "--properties", '{"gb": 3}',
             "--timestamp", "2024-05-01T10:00:00Z"],
            {"type": "track", "userId": "u1", "event": "Backup Done", "properties": {"gb": 3},
             "timestamp": "2024-05-01T10:00:00.000+00:00"},
        ),
        (
            ["identify", "--anonymous-id", "a1", "--traits", '{"plan": "pro"}'],
            {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}},
        ),
        (
            ["page", "--user-id", "u1", "--name", "Pricing", "--category", "Docs"],
            {"type": "page", "name": "Pricing", "category": "Docs"},
        ),
        (["screen", "--user-id", "u1", "--name", "Home"], {"type": "screen", "name": "Home"}),
        (
            ["group", "--user-id", "u1", "--group-id", "acme", "--traits", '{"seats": 5}'],
            {"type": "group", "groupId": "acme", "traits": {"seats": 5}},
        ),
        (
            ["alias", "--previous-id", "a1", "--user-id", "u1", "--message-id", "fixed-id"],
            {"type": "alias", "previousId": "a1", "userId": "u1", "messageId": "fixed-id"},
        ),
    ],
)  # fmt: skip
def test_event_commands_store_durably_and_return_at_once(
    argv: List[str],
    expected: Dict[str, Any],
    keyed: Dict[str, str],
    collector: Collector,
    queue_file: Path,
) -> None:
    result = cli(*argv, env=keyed)
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip()
    assert message_id == expected.get("messageId", message_id)
    assert UUID.match(message_id) or message_id == "fixed-id"
    assert stats(queue_file)["ready"] == 1
    assert collector.requests == []  # stored, not sent: the command returned at once
    deliver_in_process(queue_file, collector)
    (stored,) = collector.messages
    assert stored["messageId"] == message_id
    assert {k: stored[k] for k in expected} == expected


def test_event_flush_delivers_and_reports_failure(
    keyed: Dict[str, str], collector: Collector, queue_file: Path
) -> None:
    earlier = fill(queue_file, 2)
    result = cli("track", "--user-id", "u1", "--event", "Now", "--flush", env=keyed)
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip()
    assert collector.message_ids == {message_id, *earlier}
    assert stats(queue_file)["ready"] == 0

    collector.reject_marker = "Poison"
    rejected = cli("track", "--user-id", "u1", "--event", "Poison", "--flush", env=keyed)
    assert rejected.returncode == 1
    assert "the server rejected it (HTTP 400" in rejected.stderr
    assert "dead-letters list" in rejected.stderr
    assert (stats(queue_file)["ready"], stats(queue_file)["dead"]) == (0, 1)
    collector.reject_marker = None

    collector.set_default(Response(503, retry_after="30"))
    failed = cli("track", "--user-id", "u1", "--event", "Later", "--flush", "--timeout", "2",
                 env=keyed)  # fmt: skip
    assert failed.returncode == 1
    assert UUID.match(failed.stdout.strip())
    assert "not delivered within 2s (last error: HTTP 503" in failed.stderr
    assert stats(queue_file)["ready"] == 1


def test_invalid_events_exit_2_with_the_library_message(
    keyed: Dict[str, str], queue_file: Path
) -> None:
    no_event = cli("track", "--user-id", "u1", env=keyed)
    assert (no_event.returncode, no_event.stdout) == (2, "")
    assert (
        no_event.stderr == "durable-analytics: error: event is required: pass a non-empty string\n"
    )
    bad_json = cli("identify", "--user-id", "u", "--traits", "{nope", env=keyed)
    assert bad_json.returncode == 2
    assert "--traits is not valid JSON" in bad_json.stderr
    bad_time = cli("track", "--user-id", "u", "--event", "E", "--timestamp", "yesterday", env=keyed)
    assert bad_time.returncode == 2
    assert "is not an ISO 8601 date-time" in bad_time.stderr
    assert not queue_file.exists()  # nothing invalid reaches the disk, not even an empty file


# --------------------------------------------------------------------------------------------
# collect and demo


def _start_collect(env: Dict[str, str], *args: str) -> Tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "durable_analytics", "collect", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
    if match is None:
        proc.kill()
        pytest.fail(f"collect did not start: {banner!r} {proc.communicate()}")
    return proc, match.group(1)


def _post(url: str, batch: List[Dict[str, Any]], key: str = KEY) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    with session:
        return session.post(
            url + "/v1/batch", json={"batch": batch, "sentAt": "2024-01-01T00:00:00Z"},
            auth=(key, ""), timeout=10,
        )  # fmt: skip


def test_collect_prints_events_and_appends_them_to_a_file(
    env: Dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "events.jsonl"
    proc, url = _start_collect(env, "--out", str(out))
    batch = [
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "Clicked"},
        {"type": "page", "messageId": "m2", "anonymousId": "a9", "name": "Home"},
    ]
    try:
        assert _post(url, batch).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == [
        'track    m1 userId=u1 event="Clicked"',
        'page     m2 anonymousId=a9 name="Home"',
    ]
    assert "2 event(s) in 1 request(s), 0 duplicate(s)" in stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == batch


def test_collect_json_and_required_write_key(env: Dict[str, str]) -> None:
    proc, url = _start_collect(env, "--json", "--write-key", "only-this")
    message = {"type": "identify", "messageId": "m3", "userId": "u2", "traits": {"a": 1}}
    try:
        assert _post(url, [message], key="another").status_code == 401
        assert _post(url, [message], key="only-this").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert [json.loads(line) for line in stdout.splitlines()] == [message]
    assert "only-this" not in stdout + stderr


def test_collect_on_a_busy_port_exits_2(env: Dict[str, str]) -> None:
    with Collector() as busy:
        result = cli("collect", "--port", str(busy.port), env=env)
    assert result.returncode == 2
    assert f"check --port {busy.port}" in result.stderr


def test_demo_loses_nothing(env: Dict[str, str]) -> None:
    result = cli("demo", env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"child 1 +pid \d+: [\d,]+ track\(\) calls returned, then SIGKILL", out)
    assert re.search(r"events recorded +3,000 ", out)
    assert re.search(r"events delivered +3,000 ", out)
    assert re.search(r"^ +lost +0$", out, re.M)
    assert re.search(r"duplicates removed +\d+", out)
    assert "every recorded event arrived" in out
    queue = re.search(r"queue +(\S+)", out)
    assert queue is not None
    assert not Path(queue.group(1)).parent.exists()  # the temp dir was cleaned up


def test_demo_with_fewer_events_and_an_early_kill(env: Dict[str, str]) -> None:
    result = cli("demo", "--events", "300", "--kill-after", "40", env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"events recorded +300 ", result.stdout)
    assert re.search(r"^ +lost +0$", result.stdout, re.M)
