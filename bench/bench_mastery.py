"""The mastery engine against its targets (issues #3 and #12), on real Postgres, Redis
and Kafka.

One run, five figures, each printed next to its target:

  1. GetMastery (cached) req/s, p50 and p99 with 32 calls in flight:
       noop        grpc.health.v1.Health/Check on the same server (the floor of the kit)
       get-grpc    MasteryService/GetMastery, native gRPC, direct
       get-envoy   the same through Envoy, native gRPC
       get-json    GET /v1/students/{id}/mastery through Envoy's transcoder (JSON)
       fastapi     a minimal FastAPI + uvicorn endpoint (own process, one worker) that
                   reads the same Redis key `mastery:v1:<tenant>:<student>`, parses it as
                   learnflow.mastery.v1.Mastery and answers MessageToDict as JSON
     Load comes from Go generators (`bench/tools.sh` builds ghz and hey into
     .infra/bin): a Python client cannot keep 32 calls in flight on 2 cores. Rows are
     interleaved over ROUNDS rounds and medians reported; each row also shows the CPU
     spent per request by the server, Envoy, Redis and the load generator.
  2. Ingestion of EVENTS progress events for STUDENTS students (issue #12 targets):
     2a. with the producer running: produced as fast as one producer can, timed from
         the first produce until `mastery.evidence` holds them all (events/s), with
         the consumer's batch sizes and cycle times read back from the database (every
         row of a batch shares its transaction's now()).
     2b. draining a backlog: the mastery process is stopped, the events produced, a
         new process started; timed from its first batch's transaction to the last
         commit, with the CPU per event of mastery, Postgres and Kafka.
     2c. 1, 2 and 3 mastery processes in the group (progress.events has 6
         partitions) share EVENTS/2 events; halfway one more process joins and at
         three quarters it leaves. Rate, CPU per event, and a check that every event
         is counted once (evidence rows against the aggregates built from them).
  3. Event -> mastery.updated latency at a steady 1,000 events/s: a paced producer
     records the send time per ce_id, a consumer on mastery.updated (assigned at the
     end of the topic) records when the update naming it as cause_event_id arrives;
     split at the update's update_time into "until the engine encoded the change" and
     "outbox -> broker -> consumer".
  4. RecalculateMastery {all_students: true} over RECALC students seeded with SQL
     (4 evidence rows each), polled through google.longrunning.Operations.
  5. Peak RSS (VmHWM) of the mastery process at the end.

The mastery service runs as `learnflow serve mastery` in its own process against a
dedicated database `learnflow_bench` (dropped and recreated at start, left in place
afterwards for inspection) and Redis database 15 (only `mastery:v1:dev:bench-*` keys are
touched). The Kafka topics are the real ones; the consumer group `mastery-engine` is
first allowed to catch up with whatever is already on progress.events. The script
warns when another process is a member of that group (its results would be wrong).

    bench/tools.sh                      # once: ghz and hey into .infra/bin
    source .infra/env
    python bench/bench_mastery.py [--quick] [--profile] [--only backlog,latency]

--profile attaches py-spy (non-blocking, 100 Hz, idle frames included) to the mastery
process during ingestion, the latency run and the recalculation, and prints where the
consumer and recalculation threads spend their wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gen"))

T = TypeVar("T")
BIN = REPO / ".infra" / "bin"
BENCH_DB = "learnflow_bench"
BENCH_REDIS_DB = 15
GROUP_ID = "mastery-engine"
BENCH_PHASES = ("ingestion", "backlog", "processes", "latency", "rpc", "recalc")
PROGRESS = "progress.events"
UPDATED = "mastery.updated"
CONCURRENCY = 32
TIME_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
EVENT_TYPES = (
    "learnflow.events.v1.ExerciseGraded",
    "learnflow.events.v1.QuizGraded",
    "learnflow.events.v1.CodeReviewed",
)


# -- small helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU of a live process (0 if gone)."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def say(text: str = "") -> None:
    print(text, flush=True)


def load_infra_env() -> None:
    """Take unset infrastructure URLs from .infra/env (written by the test command)."""
    env_file = REPO / ".infra" / "env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") and value:
            os.environ.setdefault(name, value.strip().strip("'\""))


# -- the bench database --------------------------------------------------------------


def recreate_database(admin_url: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    return with_path(admin_url, f"/{BENCH_DB}")


# Every event and token of the benchmark is the development tenant's; its own
# connections to the bench database see that tenant's rows (row-level security).
TENANT = "dev"
TENANT_OPTION = f"-c learnflow.tenant={TENANT}"
MASTERY_TABLES = (
    "students",
    "evidence",
    "exercise_best",
    "topic_totals",
    "active_days",
    "mastery_current",
    "mastery_daily",
    "outbox",
)


# -- Kafka helpers -------------------------------------------------------------------


class Kafka:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        from services.kit.bus import ALL_TOPICS, KafkaBus

        self.bootstrap = bootstrap
        # A fresh broker has no topics yet, and its group coordinator is still loading:
        # create the topics as the mesh does, and ask until the coordinator answers.
        bus = KafkaBus(bootstrap)
        bus.ensure_topics(ALL_TOPICS)
        bus.close()
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self._probe = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-probe-{uuid.uuid4().hex}"}
        )

    @staticmethod
    def _until_the_coordinator_answers(ask: Callable[[], T]) -> T:
        """Retry while the broker says its group coordinator is not ready yet."""
        from confluent_kafka import KafkaError, KafkaException

        retryable = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
        }
        deadline = time.monotonic() + 60
        while True:
            try:
                return ask()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code not in retryable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin.list_topics(topic, timeout=10)
        return sorted(meta.topics[topic].partitions)

    def end_offsets(self, topic: str) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        return {
            p: self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in self.partitions(topic)
        }

    def committed(self, group: str, topic: str) -> dict[int, int]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in self.partitions(topic)]
        )

        def ask() -> Any:  # each try sends the request again
            return self.admin.list_consumer_group_offsets([request])[group].result()

        result = self._until_the_coordinator_answers(ask)
        return {tp.partition: tp.offset for tp in result.topic_partitions}

    def group(self, group: str) -> tuple[str, list[tuple[str, str, list[int]]]]:
        """(state, [(client id, host, assigned partitions of progress.events)])."""

        def ask() -> Any:  # each try sends the request again
            return self.admin.describe_consumer_groups([group], request_timeout=10)[group].result()

        description = self._until_the_coordinator_answers(ask)
        members = []
        for member in description.members:
            tps = member.assignment.topic_partitions if member.assignment else []
            members.append(
                (
                    member.client_id,
                    member.host,
                    sorted(tp.partition for tp in tps if tp.topic == PROGRESS),
                )
            )
        return str(getattr(description.state, "name", description.state)), members

    def close(self) -> None:
        self._probe.close()


def producer(bootstrap: str, **overrides: Any) -> Any:
    from confluent_kafka import Producer

    config = {
        "bootstrap.servers": bootstrap,
        "client.id": "bench-mastery",
        # As the mesh's own producer (services/kit/bus.py KafkaBus).
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    config.update(overrides)
    return Producer(config)


# -- events ---------------------------------------------------------------------------


@dataclass
class EventFactory:
    """Progress events in CloudEvents binary mode, as the exercise service sends them."""

    run_id: str
    seed: int = 7
    rnd: random.Random = field(init=False)
    serial: int = 0

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)
        self.source = f"//learnflow.dev/bench/{self.run_id}"

    @staticmethod
    def student_id(index: int) -> str:
        return f"bench-{index:06d}"

    def make(
        self, student: int, occur: float, prefix: str
    ) -> tuple[str, bytes, list[tuple[str, bytes]], str]:
        """(key, value, headers, ce_id) for one graded event of this student at `occur`."""
        from google.protobuf.timestamp_pb2 import Timestamp
        from learnflow.events.v1 import events_pb2

        rnd = self.rnd
        self.serial += 1
        sid = self.student_id(student)
        ref = events_pb2.StudentRef(
            student_id=sid,
            cohort=f"bench-c{student % 50:02d}",
            time_zone=TIME_ZONES[student % len(TIME_ZONES)],
            tenant=TENANT,
        )
        seconds = int(occur)
        when = Timestamp(seconds=seconds, nanos=int((occur - seconds) * 1e9))
        topic = rnd.randint(1, 13)
        kind = rnd.random()
        message: Any
        if kind < 0.5:
            total = rnd.randint(3, 10)
            passed = rnd.randint(0, total)
            message = events_pb2.ExerciseGraded(
                student=ref,
                topic=topic,  # type: ignore[arg-type]
                exercise_id=f"ex-{topic:02d}-{rnd.randint(0, 9)}",
                submission=f"students/{sid}/submissions/{self.serial}",
                score=passed / total,
                tests_passed=passed,
                tests_total=total,
                occur_time=when,
            )
        elif kind < 0.8:
            asked = 10
            right = rnd.randint(0, asked)
            message = events_pb2.QuizGraded(
                student=ref,
                topic=topic,  # type: ignore[arg-type]
                quiz=f"students/{sid}/quizzes/q{self.serial}",
                score=right / asked,
                correct_count=right,
                question_count=asked,
                occur_time=when,
            )
        else:
            message = events_pb2.CodeReviewed(
                student=ref,
                topic=topic,  # type: ignore[arg-type]
                code_review=f"students/{sid}/codeReviews/r{self.serial}",
                quality_score=rnd.randint(0, 100),
                occur_time=when,
            )
        ce_id = f"{prefix}-{self.serial}"
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", ce_id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", message.DESCRIPTOR.full_name.encode()),
            (
                "ce_time",
                datetime.now(UTC)
                .isoformat(timespec="microseconds")
                .replace("+00:00", "Z")
                .encode(),
            ),
            ("ce_subject", sid.encode()),
            ("content-type", b"application/protobuf"),
        ]
        return sid, message.SerializeToString(), headers, ce_id


def produce(prod: Any, key: str, value: bytes, headers: list[tuple[str, bytes]], **kw: Any) -> None:
    while True:
        try:
            prod.produce(PROGRESS, value=value, key=key.encode(), headers=headers, **kw)
            return
        except BufferError:
            prod.poll(0.05)


# -- processes -------------------------------------------------------------------------


@dataclass
class Mastery:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_mastery(work: Path, env: dict[str, str], name: str = "mastery") -> Mastery:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "mastery"],
            cwd=REPO,
            env={**env, "GRPC_PORT": str(port), "GRPC_HOST": "127.0.0.1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = Mastery(process, port, log_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 90
    ready = False
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mastery exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    ready = True
                    return service
            if time.monotonic() > deadline:
                raise TimeoutError(f"mastery not SERVING in 90 s; see {log_path}")
            time.sleep(0.2)
    finally:
        channel.close()
        if not ready:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# -- py-spy ----------------------------------------------------------------------------


class Spy:
    """py-spy record on a pid until stop(): raw (collapsed) stacks per thread, twice at
    once: `wall` samples every thread whatever it does (idle frames included), `gil`
    only the thread holding the GIL (where Python CPU goes)."""

    def __init__(self, pid: int, out: Path, *, modes: tuple[str, ...] = ("wall", "gil")) -> None:
        self.outs = {mode: out.with_name(f"{out.stem}-{mode}.txt") for mode in modes}
        self.processes = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "100",
                    "--idle" if mode == "wall" else "--gil",
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for mode, path in self.outs.items()
        ]
        time.sleep(0.5)

    def stop(self) -> dict[str, list[tuple[list[str], int]]]:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        result = {}
        for mode, path in self.outs.items():
            stacks = []
            if path.exists():
                for line in path.read_text().splitlines():
                    frames, _, count = line.rpartition(" ")
                    if frames and count.isdigit():
                        stacks.append((frames.split(";"), int(count)))
            result[mode] = stacks
        return result


FRAME = re.compile(r"^(?P<name>\S+) \((?P<file>[^:]+):(?P<line>\d+)\)$")

# Innermost match wins: a sample is charged to the deepest of these frames on its stack.
PHASES = (
    "_KafkaConsumer.poll",
    "_KafkaConsumer.commit",
    "decode",
    "to_domain",
    "MasteryStore._claim",
    "MasteryStore._upsert_students",
    "MasteryStore._record_evidence",
    "MasteryStore._merge_aggregates",
    "MasteryStore._aggregates",
    "MasteryStore._current",
    "MasteryStore._recompute",
    "MasteryStore._write_snapshots",
    "MasteryStore._enqueue",
    "encode_changes",
    "MasteryStore.apply_batch",
    "MasteryEngine.forget",
    "OutboxSender.__call__",
    "MasteryStore.drain_outbox",
    "MasteryStore.recalculate",
    "MasteryStore.update_operation",
    "MasteryStore.student_ids",
)
SELF_BY_LINE = {"MasteryStore.apply_batch", "MasteryStore.recalculate", "MasteryStore.drain_outbox"}


def source_line(file: str, line: int) -> str:
    path = REPO / file if not file.startswith("/") else Path(file)
    with contextlib.suppress(OSError, IndexError):
        lines = path.read_text().splitlines()
        text = " ".join(part.strip() for part in lines[line - 1 : line + 1])
        return text[:64]
    return ""


def thread_name(frames: list[str]) -> str:
    """py-spy --threads puts "thread (<tid>): <name>" first on every stack."""
    if not frames or not frames[0].startswith("thread ("):
        return ""
    return frames[0].partition("): ")[2]


def _phase_shares(
    stacks: list[tuple[list[str], int]], thread_prefix: str
) -> tuple[Counter[str], int]:
    phases: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        if not thread_name(frames).startswith(thread_prefix):
            continue
        total += count
        label = "(other)"
        for frame in reversed(frames[1:]):
            match = FRAME.match(frame)
            if match is None or match["name"] not in PHASES:
                continue
            label = match["name"]
            if label in SELF_BY_LINE:
                line = int(match["line"])
                label = f"{label}:{line} {source_line(match['file'], line)}"
            break
        phases[label] += count
    return phases, total


def spy_report(
    samples: dict[str, list[tuple[list[str], int]]], thread_prefix: str, title: str
) -> None:
    """Where one thread's wall time goes, by phase, and how much of it holds the GIL."""
    wall, wall_total = _phase_shares(samples.get("wall", []), thread_prefix)
    gil, gil_total = _phase_shares(samples.get("gil", []), thread_prefix)
    if not wall_total:
        say(f"  ({title}: no samples from threads named {thread_prefix}*)")
        return
    say(
        f"  {title}: {wall_total / 100:.1f} s of thread wall time sampled, "
        f"{100 * gil_total / wall_total:.0f}% of it holding the GIL (Python CPU)"
    )
    say(f"  {'wall':>6} {'GIL':>6}  phase (innermost frame)")
    for label, count in wall.most_common(16):
        say(f"  {100 * count / wall_total:5.1f}% {100 * gil[label] / wall_total:5.1f}%  {label}")


def spy_functions(
    stacks: list[tuple[list[str], int]], thread_prefix: str, title: str, top: int = 14
) -> None:
    """GIL samples of some threads: top functions by self and inclusive share."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        if not thread_name(frames).startswith(thread_prefix):
            continue
        total += count
        names = []
        for frame in frames[1:]:
            match = FRAME.match(frame)
            if match:
                names.append(f"{match['name']} ({Path(match['file']).name})")
        if names:
            own[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    if not total:
        say(f"  ({title}: no samples)")
        return
    say(f"  {title}: {total} samples holding the GIL in threads {thread_prefix}*")
    say(f"  {'self':>6}  {'function':<48}  {'incl':>6}  function")
    skip = ("Thread.", "_worker", "_WorkItem")
    left = own.most_common(top)
    right = [(n, c) for n, c in inclusive.most_common(top + 12) if not n.startswith(skip)][:top]
    for i in range(max(len(left), len(right))):
        a = (
            f"{100 * left[i][1] / total:5.1f}%  {left[i][0][:48]:<48}"
            if i < len(left)
            else " " * 56
        )
        b = f"{100 * right[i][1] / total:5.1f}%  {right[i][0][:60]}" if i < len(right) else ""
        say(f"  {a}  {b}")


class CpuMeter:
    """CPU seconds spent by the mastery processes, their Postgres backends (plus the WAL
    writer, checkpointer and background writer), the Kafka broker, Redis, and the whole
    machine, between two snapshots. Mastery processes come and go (`watch`, `retire`:
    a stopped one's CPU is read just before it stops)."""

    def __init__(self, admin_url: str, mastery_pid: int, redis_client: Any) -> None:
        import psycopg

        self._conn = psycopg.connect(admin_url, autocommit=True)
        self._pids = {mastery_pid}
        self._born: dict[int, float] = {}  # CPU a process had spent when watched
        self._retired = 0.0
        self._redis = redis_client
        pid_file = REPO / ".infra" / "kafka" / "kafka.pid"
        self._kafka = int(pid_file.read_text().split()[0]) if pid_file.exists() else None

    def watch(self, pid: int) -> None:
        """Count this (just started) process from now: its start-up is not the work."""
        self._pids.add(pid)
        self._born[pid] = cpu_seconds(pid)

    def retire(self, pid: int) -> None:
        """Call just before stopping a watched process."""
        self._retired += cpu_seconds(pid) - self._born.pop(pid, 0.0)
        self._pids.discard(pid)

    def _postgres(self) -> dict[int, float]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type IN "
            "('walwriter', 'checkpointer', 'background writer')",
            (BENCH_DB,),
        ).fetchall()
        return {pid: cpu_seconds(pid) for (pid,) in rows}

    @staticmethod
    def _machine() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # minus idle and iowait

    def snapshot(self) -> dict[str, Any]:
        return {
            "wall": time.monotonic(),
            "mastery": {pid: cpu_seconds(pid) for pid in self._pids},
            "retired": self._retired,
            "postgres": self._postgres(),
            "kafka": cpu_seconds(self._kafka),
            "redis": redis_cpu(self._redis),
            "machine": self._machine(),
        }

    def spent(self, before: dict[str, Any]) -> dict[str, float]:
        """CPU seconds per part since `before` (a process started since counts whole)."""
        after = self.snapshot()
        return {
            "wall": after["wall"] - before["wall"],
            "mastery": sum(
                cpu - before["mastery"].get(pid, self._born.get(pid, 0.0))
                for pid, cpu in after["mastery"].items()
            )
            + after["retired"]
            - before["retired"],
            "postgres": sum(
                cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items()
            ),
            **{name: after[name] - before[name] for name in ("kafka", "redis", "machine")},
        }

    def report(self, before: dict[str, Any]) -> str:
        return self.describe(self.spent(before))

    @staticmethod
    def describe(spent: dict[str, float]) -> str:
        wall, machine = spent["wall"], spent["machine"]
        return (
            f"CPU seconds over {wall:.1f} s: mastery {spent['mastery']:.1f}, "
            f"postgres {spent['postgres']:.1f}, kafka {spent['kafka']:.1f}, "
            f"redis {spent['redis']:.1f}; machine busy {machine:.1f} "
            f"({machine / wall / (os.cpu_count() or 1):.0%} of {os.cpu_count()} cores)"
        )

    def close(self) -> None:
        self._conn.close()


# -- 1. GetMastery -----------------------------------------------------------------------


@dataclass
class RowResult:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: int
    cpu_us: dict[str, float]


def write_protoset(path: Path) -> None:
    """gen/learnflow.pb plus grpc.health.v1 (for the no-op row)."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString((REPO / "gen" / "learnflow.pb").read_bytes())
    health = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(health)
    files.file.append(health)
    path.write_bytes(files.SerializeToString())


def run_ghz(
    target: str,
    call: str,
    data: dict[str, Any],
    metadata: dict[str, str],
    seconds: float,
    protoset: Path,
) -> dict[str, Any]:
    command = [
        str(BIN / "ghz"),
        "--insecure",
        f"--protoset={protoset}",
        f"--call={call}",
        "-d",
        json.dumps(data),
        "-m",
        json.dumps(metadata),
        "-c",
        str(CONCURRENCY),
        "--connections=1",
        "-z",
        f"{seconds}s",
        "--duration-stop=ignore",
        "-O",
        "json",
        target,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0 and not out.stdout.strip():
        raise RuntimeError(f"ghz failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    latency = {
        int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []
    }
    codes = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    return {
        "rps": ok / (report["total"] / 1e9) if report.get("total") else 0.0,
        "p50": latency.get(50, float("nan")),
        "p99": latency.get(99, float("nan")),
        "ok": ok,
        "errors": sum(int(v) for k, v in codes.items() if k != "OK"),
        "error_detail": report.get("errorDistribution") or {},
    }


HEY_LATENCY = re.compile(r"^\s+(\d+)%+ in ([\d.]+) secs", re.M)


def run_hey(url: str, token: str, seconds: float) -> dict[str, Any]:
    command = [
        str(BIN / "hey"),
        "-z",
        f"{seconds}s",
        "-c",
        str(CONCURRENCY),
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    text = out.stdout
    if out.returncode != 0:
        raise RuntimeError(f"hey failed: {out.stderr[-2000:]}")
    latency = {int(p): float(s) * 1000 for p, s in HEY_LATENCY.findall(text)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    total_s = float(re.search(r"Total:\s+([\d.]+) secs", text)[1])  # type: ignore[index]
    ok = codes.get(200, 0)
    errors = sum(n for c, n in codes.items() if c != 200)
    errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+Get ", text, re.M))
    return {
        "rps": ok / total_s if total_s else 0.0,
        "p50": latency.get(50, float("nan")),
        "p99": latency.get(99, float("nan")),
        "ok": ok,
        "errors": errors,
        "error_detail": text[text.find("Error distribution") :][:500]
        if "Error distribution" in text
        else {},
    }


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bench_rpc(
    args: argparse.Namespace,
    mastery: Mastery,
    student: str,
    student_token: str,
    envoy_port: int,
    envoy_pid: int | None,
    fastapi_port: int,
    fastapi_pid: int,
    protoset: Path,
    redis_client: Any,
) -> dict[str, RowResult]:
    seconds = args.rpc_seconds
    metadata = {"authorization": f"Bearer {student_token}"}
    name = f"students/{student}/mastery"
    get = "learnflow.mastery.v1.MasteryService.GetMastery"
    rows: dict[str, tuple[str, Any, int]] = {
        # name: (what, runner, server pid)
        "noop": (
            "grpc.health.v1.Health/Check, direct",
            lambda: run_ghz(
                f"127.0.0.1:{mastery.port}",
                "grpc.health.v1.Health.Check",
                {},
                metadata,
                seconds,
                protoset,
            ),
            mastery.pid,
        ),
        "get-grpc": (
            "GetMastery, gRPC direct",
            lambda: run_ghz(
                f"127.0.0.1:{mastery.port}", get, {"name": name}, metadata, seconds, protoset
            ),
            mastery.pid,
        ),
        "get-envoy": (
            "GetMastery, gRPC via Envoy",
            lambda: run_ghz(
                f"127.0.0.1:{envoy_port}", get, {"name": name}, metadata, seconds, protoset
            ),
            mastery.pid,
        ),
        "get-json": (
            "GET /v1/students/{id}/mastery via Envoy (JSON)",
            lambda: run_hey(f"http://127.0.0.1:{envoy_port}/v1/{name}", student_token, seconds),
            mastery.pid,
        ),
        "fastapi": (
            "FastAPI + uvicorn, same Redis key, JSON",
            lambda: run_hey(f"http://127.0.0.1:{fastapi_port}/v1/{name}", student_token, seconds),
            fastapi_pid,
        ),
    }
    results: dict[str, list[RowResult]] = defaultdict(list)
    for round_ in range(args.rounds):
        for row, (_what, runner, server_pid) in rows.items():
            before = (
                cpu_seconds(server_pid),
                cpu_seconds(envoy_pid),
                redis_cpu(redis_client),
                children_cpu(),
            )
            out = runner()
            after = (
                cpu_seconds(server_pid),
                cpu_seconds(envoy_pid),
                redis_cpu(redis_client),
                children_cpu(),
            )
            n = max(1, out["ok"] + out["errors"])
            cpu = {
                k: (a - b) / n * 1e6
                for k, a, b in zip(
                    ("server", "envoy", "redis", "loadgen"), after, before, strict=True
                )
            }
            results[row].append(
                RowResult(out["rps"], out["p50"], out["p99"], out["ok"], out["errors"], cpu)
            )
            if out["errors"]:
                say(f"    ! {row} round {round_ + 1}: {out['errors']} errors {out['error_detail']}")
        say(
            f"    round {round_ + 1}: "
            + ", ".join(f"{r} {results[r][-1].rps:,.0f}/s" for r in rows)
        )

    if args.profile:
        for row in ("noop", "get-grpc"):
            spy = Spy(mastery.pid, args.work / f"rpc-{row}.txt", modes=("gil",))
            rows[row][1]()
            spy_functions(spy.stop()["gil"], "mastery-rpc", f"{row} under ghz")

    def med(row: str, pick: Any) -> float:
        return float(statistics.median(pick(r) for r in results[row]))

    medians = {}
    for row in rows:
        medians[row] = RowResult(
            med(row, lambda r: r.rps),
            med(row, lambda r: r.p50_ms),
            med(row, lambda r: r.p99_ms),
            sum(r.ok for r in results[row]),
            sum(r.errors for r in results[row]),
            {
                k: med(row, lambda r, k=k: r.cpu_us[k])
                for k in ("server", "envoy", "redis", "loadgen")
            },
        )
    noop = medians["noop"].rps
    say(
        f"\n  {CONCURRENCY} in flight, {seconds:g} s per row, {args.rounds} rounds interleaved, "
        "medians; CPU us per request"
    )
    say(
        f"  {'row':<10}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs noop':>8}"
        f"{'server':>8}{'envoy':>7}{'redis':>7}{'loadgen':>8}{'errors':>7}  what"
    )
    for row, (what, _runner, _pid) in rows.items():
        r = medians[row]
        say(
            f"  {row:<10}{r.rps:>9,.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.rps / noop:>7.2f}x"
            f"{r.cpu_us['server']:>8.0f}{r.cpu_us['envoy']:>7.0f}{r.cpu_us['redis']:>7.0f}"
            f"{r.cpu_us['loadgen']:>8.0f}{r.errors:>7}  {what}"
        )
    by_cpu = medians["noop"].cpu_us["server"] / medians["get-grpc"].cpu_us["server"]
    say(
        f"  by server CPU per request alone (load generator excluded): GetMastery "
        f"{medians['get-grpc'].cpu_us['server']:.0f} us vs no-op "
        f"{medians['noop'].cpu_us['server']:.0f} us = {by_cpu:.2f}x"
    )
    return medians


# -- 2. ingestion -------------------------------------------------------------------------


class ProcessedCounter:
    """Polls how many of this run's events have been applied since it was created, in
    the background (and, given a pid, that process's resident memory)."""

    def __init__(self, url: str, source: str, period: float = 0.2, pid: int | None = None) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True, options=TENANT_OPTION)
        self._source = source
        self._base = 0
        self._base = self.count()  # counts only what arrives from now on
        self._period = period
        self._pid = pid
        self.timeline: list[tuple[float, int]] = []
        self.rss: list[tuple[float, int, int]] = []  # (time, processed, VmRSS kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM mastery.evidence WHERE source = %s", (self._source,)
        ).fetchone()
        return (int(row[0]) if row else 0) - self._base

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now, count = time.monotonic(), self.count()
            self.timeline.append((now, count))
            if self._pid is not None:
                with contextlib.suppress(OSError):
                    self.rss.append((now, count, proc_status_kb(self._pid, "VmRSS")))
            self._stop.wait(self._period)

    def wait_for(self, total: int, stall_seconds: float = 90.0) -> float:
        """Monotonic time at which the count first reached `total`."""
        last_change, last = time.monotonic(), -1
        while True:
            if self.timeline and self.timeline[-1][1] >= total:
                return next(t for t, c in self.timeline if c >= total)
            if self.timeline and self.timeline[-1][1] != last:
                last, last_change = self.timeline[-1][1], time.monotonic()
            if time.monotonic() - last_change > stall_seconds:
                raise TimeoutError(f"evidence stuck at {last} of {total}")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def batch_profile(url: str, source: str, prefix: str) -> dict[str, float]:
    """Consumer batches of one phase, from the transaction timestamps of evidence (recorded_at)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, options=TENANT_OPTION) as conn:
        rows = conn.execute(
            "SELECT recorded_at, count(*) FROM mastery.evidence "
            "WHERE source = %s AND event_id LIKE %s GROUP BY 1 ORDER BY 1",
            (source, prefix + "-%"),
        ).fetchall()
    if not rows:
        return {}
    sizes = [n for _, n in rows]
    gaps = [(b[0] - a[0]).total_seconds() * 1000 for a, b in itertools.pairwise(rows)]
    gaps.sort()
    return {
        "batches": len(rows),
        "mean_size": statistics.mean(sizes),
        "max_size": max(sizes),
        "cycle_p50_ms": percentile(gaps, 50) if gaps else float("nan"),
        "cycle_p99_ms": percentile(gaps, 99) if gaps else float("nan"),
        "span_s": (rows[-1][0] - rows[0][0]).total_seconds(),
    }


def describe_batches(b: dict[str, float]) -> str:
    if not b:
        return "none seen"
    return (
        f"{b['batches']:.0f}, mean {b['mean_size']:.0f} events (max {b['max_size']:.0f}), "
        f"one every {b['cycle_p50_ms']:.0f} ms (p50) / {b['cycle_p99_ms']:.0f} ms (p99)"
    )


Event = tuple[str, bytes, list[tuple[str, bytes]], str]


def build_events(factory: EventFactory, total: int, students: int, prefix: str) -> list[Event]:
    """`total` graded events, spread evenly over `students` in random order, each from a
    random moment of the last 29 days (late events, as an offline client's or a backfill's)."""
    say(f"  building {total:,} events for {students:,} students ...")
    now = time.time()
    order = [i % students for i in range(total)]
    factory.rnd.shuffle(order)
    return [factory.make(s, now - factory.rnd.uniform(0, 29 * 86400), prefix) for s in order]


def produce_all(kafka: Kafka, events: list[Event]) -> None:
    prod = producer(kafka.bootstrap, **{"linger.ms": 20, "batch.size": 1_000_000})
    for i, (key, value, headers, _ce_id) in enumerate(events):
        produce(prod, key, value, headers)
        if i % 2000 == 0:
            prod.poll(0)
    remaining = prod.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} events not delivered")


def first_recorded(url: str, source: str, prefix: str) -> float:
    """When the first of these events was recorded (its batch's transaction start)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, options=TENANT_OPTION) as conn:
        row = conn.execute(
            "SELECT min(recorded_at) FROM mastery.evidence WHERE source = %s AND event_id LIKE %s",
            (source, prefix + "-%"),
        ).fetchone()
    assert row and row[0] is not None
    return float(row[0].timestamp())


def wall_clock(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


def bench_backlog(
    args: argparse.Namespace,
    factory: EventFactory,
    kafka: Kafka,
    bench_url: str,
    mastery: Mastery,
    env: dict[str, str],
) -> tuple[dict[str, float], Mastery]:
    """2b: the mastery process is stopped, the backlog produced, and a new process
    drains it; timed from its first batch's transaction to the last commit. Returns the
    figures and the new process."""
    total = args.events
    events = build_events(factory, total, args.students, "bl")
    args.meter.retire(mastery.pid)
    stop_process(mastery.process)
    produced_at = time.monotonic()
    produce_all(kafka, events)
    say(f"  produced {total:,} events in {time.monotonic() - produced_at:.1f} s; starting mastery")
    counter = ProcessedCounter(bench_url, factory.source)
    mastery = start_mastery(args.work, env, "mastery-after-backlog")
    args.meter.watch(mastery.pid)
    cpu_before = args.meter.snapshot()
    spy = Spy(mastery.pid, args.work / "backlog.txt") if args.profile else None
    try:
        counter.start()
        done = wall_clock(counter.wait_for(total, stall_seconds=120))
        spent = args.meter.spent(cpu_before)
    finally:
        counter.close()
    if spy:
        samples = spy.stop()
        spy_report(samples, "consumer-", "draining, consumer threads")
        spy_functions(samples["gil"], "", "draining, every thread")
    first = first_recorded(bench_url, factory.source, "bl")
    rate = total / (done - first)
    batches = batch_profile(bench_url, factory.source, "bl")
    cpu_us = 1e6 * (spent["mastery"] + spent["postgres"] + spent["kafka"]) / total
    say(f"  drained {total:,} events in {done - first:.2f} s: {rate:,.0f} events/s")
    say(f"  consumer batches: {describe_batches(batches)}")
    say(
        f"  {CpuMeter.describe(spent)} (from SERVING); CPU per event {cpu_us:.0f} us "
        f"(mastery {1e6 * spent['mastery'] / total:.0f}, postgres "
        f"{1e6 * spent['postgres'] / total:.0f}, kafka {1e6 * spent['kafka'] / total:.0f})"
    )
    return {"rate": rate, "cpu_us": cpu_us}, mastery


def wait_for_members(kafka: Kafka, pids: set[int], timeout: float = 120) -> None:
    """Until the group is stable with every partition assigned to these processes only."""
    partitions = sorted(kafka.partitions(PROGRESS))
    deadline = time.monotonic() + timeout
    while True:
        state, members = kafka.group(GROUP_ID)
        owners = {
            int(m[0].rsplit("-", 1)[-1]) for m in members if m[0].rsplit("-", 1)[-1].isdigit()
        }
        assigned = sorted(p for m in members for p in m[2])
        if state.upper() == "STABLE" and owners == pids and assigned == partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {GROUP_ID}: {state} {members}, expected pids {pids}")
        time.sleep(0.3)


def counts_agree(url: str) -> list[str]:
    """Every applied event counted exactly once in the aggregates: the evidence (one row
    per event, the inbox) against the attempts, quiz and review counts built from it."""
    import psycopg

    checks = {
        "exercise attempts": (
            "SELECT count(*) FROM mastery.evidence WHERE component = 1",
            "SELECT coalesce(sum(attempts), 0) FROM mastery.exercise_best",
        ),
        "quizzes": (
            "SELECT count(*) FROM mastery.evidence WHERE component = 2",
            "SELECT coalesce(sum(quiz_count), 0) FROM mastery.topic_totals WHERE topic = 0",
        ),
        "reviews": (
            "SELECT count(*) FROM mastery.evidence WHERE component = 3",
            "SELECT coalesce(sum(quality_count), 0) FROM mastery.topic_totals WHERE topic = 0",
        ),
    }
    problems = []
    with psycopg.connect(url, autocommit=True, options=TENANT_OPTION) as conn:
        for name, (events_sql, counted_sql) in checks.items():
            events = conn.execute(events_sql).fetchone()
            counted = conn.execute(counted_sql).fetchone()
            if not events or not counted or int(events[0]) != int(counted[0]):
                problems.append(f"{name}: {events} events, {counted} counted")
    return problems


def bench_processes(
    args: argparse.Namespace,
    factory: EventFactory,
    kafka: Kafka,
    bench_url: str,
    mastery: Mastery,
    env: dict[str, str],
) -> list[dict[str, Any]]:
    """2c: 1, 2 and 3 mastery processes in the group share a burst of events; halfway
    one more process joins, and at three quarters it leaves (two rebalances mid-run).
    Then every event must be counted once."""
    total = args.events // 2
    extra: list[Mastery] = []
    results = []
    try:
        for n in (1, 2, 3):
            while len(extra) < n - 1:
                started = start_mastery(args.work, env, f"mastery-extra-{len(extra) + 1}")
                extra.append(started)
                args.meter.watch(started.pid)
            wait_for_members(kafka, {mastery.pid, *(e.pid for e in extra)})
            events = build_events(factory, total, args.students, f"p{n}")
            counter = ProcessedCounter(bench_url, factory.source)
            cpu_before = args.meter.snapshot()
            try:
                counter.start()
                started_at = time.monotonic()
                produce_all(kafka, events)
                counter.wait_for(total // 2, stall_seconds=120)
                joiner = start_mastery(args.work, env, f"mastery-joiner-{n}")
                args.meter.watch(joiner.pid)
                counter.wait_for(total * 3 // 4, stall_seconds=120)
                args.meter.retire(joiner.pid)
                stop_process(joiner.process)
                done = counter.wait_for(total, stall_seconds=120)
                spent = args.meter.spent(cpu_before)
            finally:
                counter.close()
            problems = counts_agree(bench_url)
            rate = total / (done - started_at)
            cpu_us = 1e6 * (spent["mastery"] + spent["postgres"] + spent["kafka"]) / total
            say(
                f"  {n} process{'es' if n > 1 else ''} (+1 joining at 50%, leaving at 75%): "
                f"{total:,} events in {done - started_at:.1f} s = {rate:,.0f}/s; CPU per event "
                f"{cpu_us:.0f} us (mastery {1e6 * spent['mastery'] / total:.0f}, postgres "
                f"{1e6 * spent['postgres'] / total:.0f}); counted once: "
                + ("yes" if not problems else f"NO: {problems}")
            )
            results.append({"processes": n, "rate": rate, "cpu_us": cpu_us, "ok": not problems})
    finally:
        for process in extra:
            args.meter.retire(process.pid)
            stop_process(process.process)
    return results


def bench_ingestion(
    args: argparse.Namespace,
    factory: EventFactory,
    kafka: Kafka,
    bench_url: str,
) -> dict[str, float]:
    total, students = args.events, args.students
    events = build_events(factory, total, students, "ing")
    size = sum(len(v) for _, v, _, _ in events) / len(events)
    updated_before = sum(kafka.end_offsets(UPDATED).values())

    counter = ProcessedCounter(bench_url, factory.source, pid=args.mastery_pid)
    prod = producer(kafka.bootstrap, **{"linger.ms": 20, "batch.size": 1_000_000})
    try:
        counter.start()
        cpu_before = args.meter.snapshot()
        started = time.monotonic()
        for i, (key, value, headers, _ce_id) in enumerate(events):
            produce(prod, key, value, headers)
            if i % 2000 == 0:
                prod.poll(0)
        remaining = prod.flush(120)
        produced = time.monotonic()
        if remaining:
            raise RuntimeError(f"{remaining} events not delivered")
        done = counter.wait_for(total, stall_seconds=120)
        cpu = args.meter.report(cpu_before)
    finally:
        counter.close()
    updated_after = sum(kafka.end_offsets(UPDATED).values())
    timeline = counter.timeline
    elapsed = done - started
    # Steady state: the rate between 10 % and 90 % of the total.
    t10 = next(t for t, c in timeline if c >= total * 0.1)
    t90 = next(t for t, c in timeline if c >= total * 0.9)
    steady = 0.8 * total / (t90 - t10) if t90 > t10 else float("nan")
    batches = batch_profile(bench_url, factory.source, "ing")
    say(
        f"  {total:,} events ({size:.0f} B each) for {students:,} students: "
        f"produced in {produced - started:.2f} s ({total / (produced - started):,.0f}/s), "
        f"all committed after {elapsed:.2f} s"
    )
    say(
        f"  ingestion rate {total / elapsed:,.0f} events/s overall, "
        f"{steady:,.0f} events/s between 10% and 90%"
    )
    say(
        f"  consumer batches: {describe_batches(batches)}; "
        f"mastery.updated messages published: {updated_after - updated_before:,}"
    )
    quartiles = []
    for q in (0.25, 0.5, 0.75, 1.0):
        t = next(t for t, c in timeline if c >= total * q)
        quartiles.append(t)
    previous = started
    rates = []
    for t in quartiles:
        rates.append(f"{total * 0.25 / (t - previous):,.0f}/s" if t > previous else "-")
        previous = t
    say(f"  rate per quarter of the events: {', '.join(rates)}")
    say(f"  {cpu}")
    if counter.rss:
        at, processed, peak = max(counter.rss, key=lambda r: r[2])
        last = counter.rss[-1]
        say(
            f"  mastery VmRSS during ingestion: peak {peak / 1024:.0f} MB at {at - started:.1f} s "
            f"with {total - processed:,} events still unprocessed; {last[2] / 1024:.0f} MB "
            "when all were committed"
        )
    return {"rate": total / elapsed, "steady": steady, **batches}


# -- 3. latency ------------------------------------------------------------------------------


def bench_latency(
    args: argparse.Namespace,
    factory: EventFactory,
    kafka: Kafka,
    bench_url: str,
    spy_pid: int | None = None,
) -> dict[str, float]:
    import psycopg
    from confluent_kafka import Consumer, TopicPartition
    from learnflow.events.v1 import events_pb2

    rate, seconds = args.latency_rate, args.latency_seconds
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    received: dict[str, tuple[float, float]] = {}  # ce_id -> (received, update_time)
    stop = threading.Event()

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"bench-latency-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 1,
        }
    )
    ends = kafka.end_offsets(UPDATED)
    consumer.assign([TopicPartition(UPDATED, p, o) for p, o in ends.items()])

    def consume() -> None:
        while not stop.is_set():
            # The first message as soon as it arrives, then whatever is already fetched:
            # consume(500, timeout) would hold the first until 500 came or time ran out.
            messages = consumer.consume(num_messages=1, timeout=0.05)
            if messages:
                messages += consumer.consume(num_messages=500, timeout=0)
            arrived = time.time()
            for msg in messages:
                if msg.error() is not None:
                    continue
                event = events_pb2.MasteryUpdated.FromString(msg.value() or b"")
                if event.cause_event_id in sent:
                    received[event.cause_event_id] = (
                        arrived,
                        event.update_time.ToNanoseconds() / 1e9,
                    )

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(1.0)  # the assignment is in place and fetching

    def on_delivery(ce_id: str) -> Any:
        def done(err: Any, _msg: Any) -> None:
            if err is None:
                acked[ce_id] = time.time()

        return done

    prod = producer(kafka.bootstrap)
    prepared = [
        factory.make(factory.rnd.randrange(args.students), 0.0, "lat") for _ in range(total)
    ]
    say(f"  producing {total:,} events at {rate:,}/s for {seconds:g} s ...")
    from google.protobuf.timestamp_pb2 import Timestamp

    spy = Spy(spy_pid, args.work / "latency.txt") if spy_pid else None
    cpu_before = args.meter.snapshot()
    started = time.monotonic()
    for i, (key, _value, headers, ce_id) in enumerate(prepared):
        target = started + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # occur_time = now: re-stamp the payload (it was built with a placeholder time).
        message_type = headers[3][1].decode().rsplit(".", 1)[1]
        message = getattr(events_pb2, message_type).FromString(_value)
        now = time.time()
        message.occur_time.CopyFrom(Timestamp(seconds=int(now), nanos=int((now % 1) * 1e9)))
        value = message.SerializeToString()
        sent[ce_id] = time.time()
        produce(prod, key, value, headers, on_delivery=on_delivery(ce_id))
        prod.poll(0)
    prod.flush(30)
    actual_rate = total / (time.monotonic() - started)
    samples = spy.stop() if spy else None  # the steady part only, not the idle tail
    # Stragglers: wait until no update arrived for 2 s (at most 15 s).
    deadline = time.monotonic() + 15
    last = -1
    while time.monotonic() < deadline:
        time.sleep(2.0)
        if len(received) == last:
            break
        last = len(received)
    stop.set()
    reader.join(5)
    consumer.close()
    cpu = args.meter.report(cpu_before)

    def stats(values: list[float]) -> tuple[float, float, float]:
        values = sorted(v * 1000 for v in values)
        return (
            percentile(values, 50),
            percentile(values, 99),
            values[-1] if values else float("nan"),
        )

    end_to_end = stats([r[0] - sent[c] for c, r in received.items()])
    to_broker = stats([acked[c] - sent[c] for c in acked])
    to_encode = stats([r[1] - sent[c] for c, r in received.items()])
    to_consumer = stats([r[0] - r[1] for r in received.values()])
    # Every event of a batch carries its transaction's start time (recorded_at = now()).
    with psycopg.connect(bench_url, autocommit=True, options=TENANT_OPTION) as conn:
        tx_start = {
            event_id: at.timestamp()
            for event_id, at in conn.execute(
                "SELECT event_id, recorded_at FROM mastery.evidence "
                "WHERE source = %s AND event_id LIKE 'lat-%%'",
                (factory.source,),
            )
        }
    matched = [c for c in received if c in tx_start]
    queued = stats([tx_start[c] - sent[c] for c in matched])
    in_tx = stats([received[c][1] - tx_start[c] for c in matched])
    batches = batch_profile(bench_url, factory.source, "lat")
    say(
        f"  sent {total:,} at {actual_rate:,.0f}/s; updates received for {len(received):,} "
        f"({100 * len(received) / total:.0f}%; an event that does not change mastery, or is "
        "superseded by a later event of the same student in the same batch, has none)"
    )
    say(f"  {'ms':<46}{'p50':>8}{'p99':>8}{'max':>8}")
    for label, (p50, p99, worst) in (
        ("event sent -> mastery.updated received", end_to_end),
        ("  sent -> acked by the broker (producer)", to_broker),
        ("  sent -> change encoded (update_time)", to_encode),
        ("    sent -> its batch's transaction began", queued),
        ("    transaction began -> change encoded", in_tx),
        ("  encoded -> received (commit, outbox, fetch)", to_consumer),
    ):
        say(f"  {label:<46}{p50:>8.1f}{p99:>8.1f}{worst:>8.1f}")
    say(f"  consumer batches: {describe_batches(batches)}")
    say(f"  {cpu}")
    if samples is not None:
        spy_report(samples, "consumer-", "while producing, consumer thread")
    return {
        "p50": end_to_end[0],
        "p99": end_to_end[1],
        "max": end_to_end[2],
        "updates": len(received),
        "sent": total,
    }


# -- 4. recalculation -------------------------------------------------------------------------


SEED_SQL = """
INSERT INTO mastery.students (student_id, cohort, time_zone)
SELECT 'recalc-' || lpad(i::text, 6, '0'), 'recalc-c' || (i % 100),
       (ARRAY['UTC','Europe/Berlin','America/New_York','Asia/Tokyo','Australia/Sydney'])[1 + i % 5]
FROM generate_series(0, %(n)s - 1) AS i;
INSERT INTO mastery.evidence (student_id, source, event_id, event_type, component, topic,
                              subject, value, occur_time)
SELECT 'recalc-' || lpad(i::text, 6, '0'), '//learnflow.dev/bench/seed', 'seed-' || i || '-' || j,
       (ARRAY['learnflow.events.v1.ExerciseGraded','learnflow.events.v1.QuizGraded',
              'learnflow.events.v1.CodeReviewed','learnflow.events.v1.ExerciseGraded'])[1 + j],
       (ARRAY[1, 2, 3, 1])[1 + j],
       1 + (i + j) % 13,
       CASE j WHEN 0 THEN 'ex-' || (1 + (i + j) % 13) || '-a'
              WHEN 3 THEN 'ex-' || (1 + (i + j) % 13) || '-b'
              WHEN 1 THEN 'students/recalc-' || i || '/quizzes/q1'
              ELSE 'students/recalc-' || i || '/codeReviews/r1' END,
       round(random()::numeric, 3)::float8,
       now() - random() * interval '29 days'
FROM generate_series(0, %(n)s - 1) AS i, generate_series(0, 3) AS j;
"""


def bench_recalculation(
    args: argparse.Namespace,
    mastery: Mastery,
    bench_url: str,
    admin_token: str,
    spy_dir: Path | None,
) -> dict[str, float]:
    import grpc
    import psycopg
    from google.longrunning import operations_pb2, operations_pb2_grpc
    from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

    n = args.recalc_students
    with psycopg.connect(bench_url, autocommit=True, options=TENANT_OPTION) as conn:
        conn.execute("TRUNCATE " + ", ".join(f"mastery.{t}" for t in MASTERY_TABLES))
        seeded = time.monotonic()
        conn.execute(SEED_SQL.replace("%(n)s", str(int(n))))
        conn.execute("ANALYZE mastery.students, mastery.evidence")
        say(f"  seeded {n:,} students x 4 evidence rows in {time.monotonic() - seeded:.1f} s")

    channel = grpc.insecure_channel(f"127.0.0.1:{mastery.port}")
    stub = mastery_pb2_grpc.MasteryServiceStub(channel)
    operations = operations_pb2_grpc.OperationsStub(channel)
    metadata = [("authorization", f"Bearer {admin_token}")]
    results = {}
    try:
        for label in ("first", "again"):
            spy = Spy(mastery.pid, spy_dir / f"recalc-{label}.txt") if spy_dir else None
            cpu_before = args.meter.snapshot()
            started = time.monotonic()
            operation = stub.RecalculateMastery(
                mastery_pb2.RecalculateMasteryRequest(all_students=True),
                metadata=metadata,
                timeout=60,
            )
            accepted = time.monotonic() - started
            while not operation.done:
                time.sleep(0.05)
                operation = operations.GetOperation(
                    operations_pb2.GetOperationRequest(name=operation.name),
                    metadata=metadata,
                    timeout=10,
                )
                if time.monotonic() - started > max(600, n / 50):
                    raise TimeoutError("recalculation did not finish")
            elapsed = time.monotonic() - started
            cpu = args.meter.report(cpu_before)
            if operation.HasField("error"):
                raise RuntimeError(f"recalculation failed: {operation.error}")
            response = mastery_pb2.RecalculateMasteryResponse()
            operation.response.Unpack(response)
            say(
                f"  {label:<6}: {response.processed_students:,} students "
                f"({response.changed_students:,} changed) in {elapsed:.2f} s = "
                f"{response.processed_students / elapsed:,.0f} students/s "
                f"(RPC answered in {accepted * 1000:.0f} ms)"
            )
            say(f"          {cpu}")
            results[label] = elapsed
            if spy:
                spy_report(spy.stop(), "recalc-", f"recalculation ({label}), recalc thread")
    finally:
        channel.close()
    return {"seconds": results["first"], "again": results["again"], "students": n}


# -- the FastAPI baseline (run as its own process by this script) -----------------------------


def serve_fastapi(port: int) -> None:
    import redis.asyncio as aioredis
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse
    from google.protobuf.json_format import MessageToDict
    from learnflow.mastery.v1 import mastery_pb2

    app = FastAPI()
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])

    @app.get("/v1/students/{student_id}/mastery")
    async def get_mastery(student_id: str) -> JSONResponse:
        raw = await client.get(f"mastery:v1:{TENANT}:{student_id}")
        if raw is None:
            raise HTTPException(status_code=404, detail="not cached")
        assert isinstance(raw, bytes)
        return JSONResponse(MessageToDict(mastery_pb2.Mastery.FromString(raw)))

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_fastapi(
    work: Path, env: dict[str, str], student: str
) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    log_path = work / "fastapi.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-fastapi", str(port)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fastapi exited:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(f"http://127.0.0.1:{port}/v1/students/{student}/mastery", timeout=1)
            if reply.status_code == 200:
                return process, port
        time.sleep(0.1)
    stop_process(process)
    raise TimeoutError("fastapi did not answer")


# -- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    say(f"\n== {title}")
    started = time.monotonic()
    yield
    say(f"  ({time.monotonic() - started:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run")
    parser.add_argument("--profile", action="store_true", help="py-spy the mastery process")
    parser.add_argument("--events", type=int)
    parser.add_argument("--students", type=int)
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--rpc-seconds", type=float)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recalc-students", type=int)
    parser.add_argument(
        "--only",
        default=",".join(BENCH_PHASES),
        help=f"comma-separated phases to run (default all: {','.join(BENCH_PHASES)})",
    )
    parser.add_argument("--serve-fastapi", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fastapi:
        serve_fastapi(args.serve_fastapi)
        return 0
    phases = set(args.only.split(","))
    if phases - set(BENCH_PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(phases - set(BENCH_PHASES)))}")
    quick = args.quick
    args.events = args.events or (20_000 if quick else 200_000)
    args.students = args.students or (500 if quick else 5_000)
    args.latency_seconds = args.latency_seconds or (5.0 if quick else 20.0)
    args.rpc_seconds = args.rpc_seconds or (2.0 if quick else 5.0)
    args.recalc_students = args.recalc_students or (5_000 if quick else 50_000)

    if not all((BIN / tool).exists() for tool in ("ghz", "hey")):
        say("building the load generators (bench/tools.sh) ...")
        if subprocess.run(["bash", str(REPO / "bench" / "tools.sh")], check=False).returncode:
            say("bench/tools.sh failed: ghz and hey are needed (Go from the module proxy)")
            return 2
    load_infra_env()
    missing = [
        v for v in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") if not os.environ.get(v)
    ]
    if missing:
        say(f"set {', '.join(missing)} (the test command's infrastructure: source .infra/env)")
        return 2

    import grpc
    import redis
    from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc

    from services.gateway.runner import Gateway
    from services.kit import devtokens
    from services.kit.config import Settings

    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="lf-bench-mastery-"))
    settings = Settings(jwks_path=work / "jwks.json", log_level="WARNING", grpc_host="127.0.0.1")
    devtokens.ensure_keys(key_dir=work, settings=settings)
    admin_token = devtokens.mint_token("bench-admin", "admin", key_dir=work, settings=settings)
    factory = EventFactory(run_id)
    student = factory.student_id(0)
    student_token = devtokens.mint_token(student, "student", key_dir=work, settings=settings)
    bench_url = recreate_database(os.environ["DATABASE_URL"])
    redis_url = with_path(os.environ["REDIS_URL"], f"/{BENCH_REDIS_DB}")
    redis_client = redis.Redis.from_url(redis_url)
    stale = list(redis_client.scan_iter(f"mastery:v1:{TENANT}:bench-*", count=1000))
    if stale:
        redis_client.delete(*stale)
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "REDIS_URL": redis_url,
        "JWKS_PATH": str(settings.jwks_path),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    kafka = Kafka(os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    protoset = work / "bench.protoset"
    write_protoset(protoset)
    spy_dir = work if args.profile else None
    args.work = work

    say(
        f"mastery engine benchmark ({'quick' if quick else 'full'}), run {run_id}, "
        f"{os.cpu_count()} CPUs, work dir {work}"
    )
    say(f"  bench database {BENCH_DB}, Redis db {BENCH_REDIS_DB}, Kafka {kafka.bootstrap}")

    mastery: Mastery | None = None
    gateway: Gateway | None = None
    fastapi: subprocess.Popen[bytes] | None = None
    meter: CpuMeter | None = None
    figures: dict[str, Any] = {}
    rss_after: list[tuple[str, int]] = []
    try:
        state, members = kafka.group(GROUP_ID)
        if members:
            say(f"  ! group {GROUP_ID} already has members before start: {members}")
        backlog_end = kafka.end_offsets(PROGRESS)
        committed_before = kafka.committed(GROUP_ID, PROGRESS)
        lag = sum(e - max(0, committed_before.get(p, 0)) for p, e in backlog_end.items())
        with step("start the mastery service and let it catch up with progress.events"):
            mastery = start_mastery(work, env)
            deadline = time.monotonic() + 300
            while True:
                state, members = kafka.group(GROUP_ID)
                committed = kafka.committed(GROUP_ID, PROGRESS)
                assigned = sorted(p for m in members for p in m[2])
                caught_up = all(
                    committed.get(p, -1) >= end for p, end in backlog_end.items() if end > 0
                )
                if state.upper() == "STABLE" and assigned == sorted(backlog_end) and caught_up:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"group {GROUP_ID}: {state} {members} {committed}")
                time.sleep(0.5)
            strangers = [m for m in members if not m[0].endswith(f"-{mastery.pid}")]
            if strangers:
                say(f"  ! other members in {GROUP_ID}: {strangers}; results are unreliable")
            say(
                f"  serving on {mastery.port} (pid {mastery.pid}); group {GROUP_ID} {state}, "
                f"lag at start {lag:,} events, committed offsets {committed}"
            )
            # Warm-up: connections, prepared plans, the first batches.
            counter = ProcessedCounter(bench_url, factory.source)
            prod = producer(kafka.bootstrap)
            now = time.time()
            for i in range(200):
                key, value, headers, _ = factory.make(i % args.students, now - i, "warm")
                produce(prod, key, value, headers)
            prod.flush(30)
            counter.start()
            counter.wait_for(200)
            counter.close()
            rss_after.append(("start", proc_status_kb(mastery.pid, "VmHWM")))
            args.mastery_pid = mastery.pid
            meter = args.meter = CpuMeter(os.environ["DATABASE_URL"], mastery.pid, redis_client)

        if "ingestion" in phases:
            with step(
                f"2a. ingestion with the producer running ({args.events:,} events, "
                f"{args.students:,} students)"
            ):
                spy = Spy(mastery.pid, work / "ingest.txt") if args.profile else None
                figures["ingest"] = bench_ingestion(args, factory, kafka, bench_url)
                if spy:
                    spy_report(spy.stop(), "consumer-", "ingestion, consumer thread")
                rss_after.append(("ingestion", proc_status_kb(mastery.pid, "VmHWM")))

        if "backlog" in phases:
            with step(f"2b. draining a backlog of {args.events:,} events produced beforehand"):
                figures["backlog"], mastery = bench_backlog(
                    args, factory, kafka, bench_url, mastery, env
                )
                args.mastery_pid = mastery.pid
                rss_after.append(("backlog", proc_status_kb(mastery.pid, "VmHWM")))

        if "processes" in phases:
            with step("2c. 1, 2 and 3 mastery processes sharing progress.events (6 partitions)"):
                figures["processes"] = bench_processes(
                    args, factory, kafka, bench_url, mastery, env
                )

        if "latency" in phases:
            with step(f"3. event -> mastery.updated latency at {args.latency_rate:,} events/s"):
                time.sleep(1.0)
                figures["latency"] = bench_latency(
                    args, factory, kafka, bench_url, mastery.pid if args.profile else None
                )
                rss_after.append(("latency", proc_status_kb(mastery.pid, "VmHWM")))

        if "rpc" in phases:
            with step("1. GetMastery (cached) vs a no-op RPC and FastAPI, 32 in flight"):
                channel = grpc.insecure_channel(f"127.0.0.1:{mastery.port}")
                reply = mastery_pb2_grpc.MasteryServiceStub(channel).GetMastery(
                    mastery_pb2.GetMasteryRequest(name=f"students/{student}/mastery"),
                    metadata=[("authorization", f"Bearer {student_token}")],
                    timeout=10,
                )
                channel.close()
                cached = redis_client.get(f"mastery:v1:{TENANT}:{student}")
                if cached is None:
                    raise RuntimeError("GetMastery did not fill the cache")
                evidence = sum(
                    len(getattr(t.evidence, c).latest)
                    for t in [*reply.topics, reply]
                    for c in ("completion", "quiz", "quality")
                )
                say(
                    f"  {student}: cached Mastery is {len(cached):,} bytes "
                    f"({len(reply.topics)} topics, {evidence} evidence items)"
                )
                gateway = Gateway(
                    settings,
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ports={"mastery": mastery.port},
                    run_dir=work,
                )
                gateway.start()
                fastapi, fastapi_port = start_fastapi(work, env, student)
                envoy_pid = gateway._process.pid if gateway._process else None
                figures["rpc"] = bench_rpc(
                    args,
                    mastery,
                    student,
                    student_token,
                    gateway.listen_port,
                    envoy_pid,
                    fastapi_port,
                    fastapi.pid,
                    protoset,
                    redis_client,
                )
                rss_after.append(("GetMastery", proc_status_kb(mastery.pid, "VmHWM")))

        if "recalc" in phases:
            with step(f"4. recalculation of {args.recalc_students:,} students"):
                figures["recalc"] = bench_recalculation(
                    args, mastery, bench_url, admin_token, spy_dir
                )
                rss_after.append(("recalculation", proc_status_kb(mastery.pid, "VmHWM")))

        with step("5. memory of the mastery process"):
            hwm = proc_status_kb(mastery.pid, "VmHWM")
            rss = proc_status_kb(mastery.pid, "VmRSS")
            # The highest of every mastery process this run served from (2b starts one).
            figures["rss_mb"] = max(hwm, *(kb for _, kb in rss_after)) / 1024
            say(f"  VmHWM {hwm / 1024:.0f} MB, VmRSS now {rss / 1024:.0f} MB")
            say(
                "  peak after each phase: "
                + ", ".join(f"{p} {kb / 1024:.0f} MB" for p, kb in rss_after)
            )
            state, members = kafka.group(GROUP_ID)
            strangers = [m for m in members if not m[0].endswith(f"-{mastery.pid}")]
            if strangers:
                say(f"  ! other members in {GROUP_ID} at the end: {strangers}")
    finally:
        if fastapi is not None:
            stop_process(fastapi)
        if gateway is not None:
            gateway.stop()
        if mastery is not None:
            stop_process(mastery.process)
        kafka.close()
        if meter is not None:
            meter.close()
        redis_client.close()

    summary(args, figures)
    return 0


def summary(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, bool | None]] = []
    for key, name in (
        ("backlog", "ingestion, events/s draining a backlog"),
        ("ingest", "  the same with the producer running"),
    ):
        if key in figures:
            rate = figures[key]["rate"]
            rows.append((name, f"{rate:,.0f}", ">= 10,000", rate >= 10_000))
    for run in figures.get("processes", []):
        n = run["processes"]
        rows.append(
            (
                f"{n} process{'es' if n > 1 else ''}, 2 rebalances: events counted once",
                f"{run['rate']:,.0f}/s, {run['cpu_us']:.0f} us/event",
                "once",
                run["ok"],
            )
        )
    if "rpc" in figures:
        rpc = figures["rpc"]
        noop, grpc_get, json_get, fast = (
            rpc[k].rps for k in ("noop", "get-grpc", "get-json", "fastapi")
        )
        rows.append(
            (
                "GetMastery gRPC / no-op RPC (same server)",
                f"{grpc_get / noop:.2f}x ({grpc_get:,.0f}/{noop:,.0f})",
                ">= 0.8x",
                grpc_get / noop >= 0.8,
            )
        )
        cpu_ratio = rpc["noop"].cpu_us["server"] / rpc["get-grpc"].cpu_us["server"]
        rows.append(
            (
                "  the same by server CPU per request (info)",
                f"{cpu_ratio:.2f}x",
                ">= 0.8x",
                None,
            )
        )
        rows.append(
            (
                "GetMastery gRPC / FastAPI",
                f"{grpc_get / fast:.2f}x ({grpc_get:,.0f}/{fast:,.0f})",
                ">= 1.0x",
                grpc_get / fast >= 1.0,
            )
        )
        rows.append(
            (
                "GetMastery JSON via Envoy / FastAPI",
                f"{json_get / fast:.2f}x ({json_get:,.0f}/{fast:,.0f})",
                ">= 1.0x",
                json_get / fast >= 1.0,
            )
        )
    if "latency" in figures:
        latency = figures["latency"]
        rows.append(
            (
                f"p99 event -> mastery.updated at {args.latency_rate:,}/s",
                f"{latency['p99']:.0f} ms",
                "< 100 ms",
                latency["p99"] < 100,
            )
        )
    if "recalc" in figures:
        recalc = figures["recalc"]
        target = 30.0 * recalc["students"] / 50_000
        rows.append(
            (
                f"recalculation of {recalc['students']:,} students",
                f"{recalc['seconds']:.1f} s",
                f"< {target:g} s",
                recalc["seconds"] < target,
            )
        )
    rows.append(
        (
            "peak RSS of the mastery process",
            f"{figures['rss_mb']:.0f} MB",
            "< 256 MB",
            figures["rss_mb"] < 256,
        )
    )
    say(
        "\n== summary (targets of issues #3 and #12)"
        + (" - QUICK RUN, reduced sizes" if args.quick else "")
    )
    say(f"  {'figure':<46}{'measured':>24}  {'target':<10}result")
    for name, measured, target_text, ok in rows:
        result = "info" if ok is None else "PASS" if ok else "MISS"
        say(f"  {name:<46}{measured:>24}  {target_text:<10}{result}")


if __name__ == "__main__":
    raise SystemExit(main())
