"""The real parts: Postgres, Redis and Kafka from the test command, the whole mesh
started in-process on free ports against them, and Envoy in front of it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.gateway.runner import Gateway
from services.kit.auth import DEV_TENANT
from services.kit.bus import (
    LEARNING_RESPONSES,
    MASTERY_UPDATED,
    PROGRESS_EVENTS,
    STRUGGLE_DETECTED,
)
from services.kit.catalogue import SERVICES
from services.kit.config import Settings
from services.kit.consent import Purpose
from services.kit.runtime import Runtime
from services.kit.server import LearnFlowServer
from services.registry import builder
from tests.conftest import MintToken, free_port
from tests.integration.test_mastery import Events

REQUIRED = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture(scope="session", autouse=True)
def real_infrastructure() -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"integration tests need {', '.join(missing)}: run them with `make test` "
            '(or `eval "$(make -s infra-up)"` first)',
            pytrace=False,
        )


@pytest.fixture(scope="session")
def runtime(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = Runtime(settings, run_dir=tmp_path_factory.mktemp("run"))
    yield rt
    rt.close()


# The schools whose students the tests that script a model ask for.
MODEL_TENANTS = (DEV_TENANT, "school-a")


@pytest.fixture(scope="session")
def model_use_granted(runtime: Runtime) -> None:
    """The schools of the tests that call the scripted model let their students' text
    reach a model by default (the platform's default is no model use)."""
    for tenant in MODEL_TENANTS:
        runtime.consent.set_defaults(tenant, {Purpose.MODEL_USE: True}, "tests")


@pytest.fixture(scope="session")
def events(settings: Settings, mesh: dict[str, int]) -> Events:
    """A plain Kafka producer of CloudEvents, for tests that feed the mesh's consumers."""
    assert settings.kafka_bootstrap_servers
    return Events(settings.kafka_bootstrap_servers)


@pytest.fixture(scope="session")
def mesh(settings: Settings, runtime: Runtime, mint_token: MintToken) -> Iterator[dict[str, int]]:
    """Every service, started as `learnflow run` does, on free ports: name -> port.
    Each service's `<SERVICE>_ADDR` points at its port, so they reach one another."""
    ports = {spec.name: free_port() for spec in SERVICES}
    patch = pytest.MonkeyPatch()
    for spec in SERVICES:
        patch.setenv(spec.address_env, f"127.0.0.1:{ports[spec.name]}")
    servers = [
        LearnFlowServer(
            spec,
            builder(spec.name)(runtime),
            settings,
            port=ports[spec.name],
            audit=runtime.audit,
        )
        for spec in SERVICES
    ]
    for server in servers:
        server.start()
    _wait_until_consumers_caught_up(settings)
    yield ports
    for server in servers:
        server.stop(grace=1.0)
    patch.undo()


def _wait_until_consumers_caught_up(settings: Settings, timeout: float = 600.0) -> None:
    """Until the mesh's consumer groups have read what their topics held when it started.
    A benchmark run before the tests leaves hundreds of thousands of events behind; a
    test waiting 30 s for its own event would wait behind them instead."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    assert settings.kafka_bootstrap_servers
    groups = {
        settings.mastery_consumer_group: [PROGRESS_EVENTS],
        settings.notify_consumer_group: [STRUGGLE_DETECTED, MASTERY_UPDATED],
        settings.notify_updates_consumer_group: [LEARNING_RESPONSES, MASTERY_UPDATED],
    }
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers
    }
    admin = AdminClient(config)
    probe = Consumer({**config, "group.id": "tests-probe"})
    try:
        metadata = admin.list_topics(timeout=10).topics
        ends = {
            TopicPartition(topic, p): probe.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10
            )[1]
            for topics in groups.values()
            for topic in topics
            for p in metadata[topic].partitions
        }
        deadline = time.monotonic() + timeout
        for group, topics in groups.items():
            wanted = [tp for tp in ends if tp.topic in topics and ends[tp] > 0]
            while wanted:
                request = ConsumerGroupTopicPartitions(group, wanted)
                done = admin.list_consumer_group_offsets([request])[group].result()
                behind = [
                    tp
                    for tp in done.topic_partitions
                    if tp.offset < ends[TopicPartition(tp.topic, tp.partition)]
                ]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"consumer group {group} still behind on {behind}")
                time.sleep(0.5)
    finally:
        probe.close()


@pytest.fixture(scope="session")
def channels(mesh: dict[str, int]) -> Iterator[dict[str, grpc.Channel]]:
    """A channel to each service of the mesh, by name."""
    opened = {name: grpc.insecure_channel(f"127.0.0.1:{port}") for name, port in mesh.items()}
    yield opened
    for channel in opened.values():
        channel.close()


@pytest.fixture(scope="session")
def gateway(
    settings: Settings, mesh: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = Gateway(
        settings,
        listen_port=free_port(),
        admin_port=free_port(),
        ports=mesh,
        run_dir=tmp_path_factory.mktemp("gateway"),
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> str:
    return gateway.url


@pytest.fixture(scope="session")
def envoy_log(gateway: Gateway) -> Path:
    return gateway.log_path


@pytest.fixture
def progress_events(settings: Settings) -> Iterator[Consumer]:
    """A plain consumer of progress.events positioned at its current end, so only what
    a test publishes from now on is read (the topic may hold a benchmark's backlog)."""
    assert settings.kafka_bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-progress-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    topic = consumer.list_topics(PROGRESS_EVENTS, timeout=10).topics[PROGRESS_EVENTS]
    ends = []
    for partition in topic.partitions:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(PROGRESS_EVENTS, partition), timeout=10
        )
        ends.append(TopicPartition(PROGRESS_EVENTS, partition, high))
    consumer.assign(ends)
    yield consumer
    consumer.close()
