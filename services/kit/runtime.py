"""The adapters a process shares: database, bus, cache, chosen from the settings.

Unset URLs select the embedded defaults. The run command builds one
Runtime for all services in its process, so they share one embedded Postgres and one
in-process bus; `learnflow serve <service>` builds one per service process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from services.kit.audit import AuditTrail
from services.kit.bus import ALL_TOPICS, Bus, InProcessBus, KafkaBus
from services.kit.cache import Cache, InProcessCache, RedisCache
from services.kit.config import RUN_DIR, Settings
from services.kit.consent import Consent, model_use_allowed
from services.kit.db import Database, embedded_postgres_url
from services.kit.erasure import Erase, Tombstones, erasure_consumer, erasure_health_name
from services.kit.export import ExportParts, Gather, export_consumer, export_health_name
from services.kit.limits import InProcessLimiter, Limiter, RedisLimiter
from services.kit.roster import PostgresRosterStore, Roster
from services.kit.server import ServiceParts
from services.kit.windows import InProcessWindows, RedisWindows, Windows

if TYPE_CHECKING:
    # The openai client costs ~20 MB of memory: only the agents load it (notify holds
    # thousands of streams in 256 MB).
    from services.kit.llm import LLM

log = logging.getLogger("learnflow.runtime")

KIT_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Runtime:
    def __init__(self, settings: Settings, run_dir: Path = RUN_DIR) -> None:
        self.settings = settings
        self._run_dir = run_dir
        self._lock = threading.Lock()
        self._bus: Bus | None = None
        self._cache: Cache | None = None
        self._llm: LLM | None = None
        self._windows: Windows | None = None
        self._limiter: Limiter | None = None
        self._roster: Roster | None = None
        self._tombstones: Tombstones | None = None
        self._export_parts: ExportParts | None = None
        self._consent: Consent | None = None
        self._databases: list[Database] = []
        # Every authenticated call's audit record (services/kit/audit.py), published on
        # this runtime's bus: on with a broker; on the in-process bus only in a process
        # that serves the audit service too (it calls `audit.enable()`). Servers built
        # from this runtime's parts are given it (LearnFlowServer's `audit`).
        self.audit = AuditTrail(lambda: self.bus, enabled=bool(settings.kafka_bootstrap_servers))

    @property
    def database_url(self) -> str:
        return self.settings.database_url or embedded_postgres_url(self._run_dir / "pgdata")

    def database(self, schema: str, migrations_dir: Path, *, max_size: int = 10) -> Database:
        """A migrated, open pool on the service's own schema."""
        db = Database(self.database_url, schema, max_size=max_size)
        db.migrate(migrations_dir)
        db.open()
        with self._lock:
            self._databases.append(db)
        return db

    @property
    def bus(self) -> Bus:
        with self._lock:
            if self._bus is None:
                if self.settings.kafka_bootstrap_servers:
                    kafka = KafkaBus(self.settings.kafka_bootstrap_servers)
                    kafka.ensure_topics(ALL_TOPICS)
                    self._bus = kafka
                else:
                    log.info("KAFKA_BOOTSTRAP_SERVERS unset: using the in-process bus")
                    self._bus = InProcessBus()
            return self._bus

    @property
    def cache(self) -> Cache:
        with self._lock:
            if self._cache is None:
                if self.settings.redis_url:
                    self._cache = RedisCache(self.settings.redis_url)
                else:
                    log.info("REDIS_URL unset: using the in-process cache")
                    self._cache = InProcessCache()
            return self._cache

    @property
    def windows(self) -> Windows:
        """Sliding windows for detection rules: Redis, or in-process without REDIS_URL."""
        with self._lock:
            if self._windows is None:
                if self.settings.redis_url:
                    self._windows = RedisWindows(self.settings.redis_url)
                else:
                    self._windows = InProcessWindows()
            return self._windows

    @property
    def roster(self) -> Roster:
        """The student roster every service shares (kit-owned schema `roster`)."""
        with self._lock:
            roster = self._roster
        if roster is None:
            db = self.database("roster", KIT_MIGRATIONS / "roster", max_size=4)
            tombstones = self.tombstones
            with self._lock:
                if self._roster is None:
                    self._roster = Roster(
                        PostgresRosterStore(db),
                        erased=lambda tenant, student: bool(tombstones.erased(tenant, [student])),
                    )
                roster = self._roster
        return roster

    @property
    def tombstones(self) -> Tombstones:
        """The students erased, by pseudonym (kit-owned schema `erasure`)."""
        with self._lock:
            tombstones = self._tombstones
        if tombstones is None:
            db = self.database("erasure", KIT_MIGRATIONS / "erasure", max_size=4)
            with self._lock:
                if self._tombstones is None:
                    self._tombstones = Tombstones(db)
                tombstones = self._tombstones
        return tombstones

    @property
    def consent(self) -> Consent:
        """Students' consent to analytics and model use (kit-owned schema `consent`)."""
        with self._lock:
            consent = self._consent
        if consent is None:
            db = self.database("consent", KIT_MIGRATIONS / "consent", max_size=4)
            with self._lock:
                if self._consent is None:
                    self._consent = Consent(db)
                consent = self._consent
        return consent

    @property
    def export_parts(self) -> ExportParts:
        """Each service's part of each student export (kit-owned schema `exports`)."""
        with self._lock:
            export_parts = self._export_parts
        if export_parts is None:
            db = self.database("exports", KIT_MIGRATIONS / "exports", max_size=4)
            with self._lock:
                if self._export_parts is None:
                    self._export_parts = ExportParts(db)
                export_parts = self._export_parts
        return export_parts

    def with_student_data(
        self,
        parts: ServiceParts,
        service: str,
        *,
        erase: Erase,
        gather: Gather,
        cache: Cache | None = None,
    ) -> ServiceParts:
        """`parts` with the consumers through which `service` takes part in the data
        rights of the students it holds data of, started, stopped and health-checked
        beside its own background work: erasing them (`erase` deletes what it holds of a
        student; the cache, by default this runtime's, is swept of them too;
        services/kit/erasure.py) and exporting them (`gather`; services/kit/export.py)."""
        transient = (psycopg.OperationalError,)
        stall = self.settings.consumer_stall_seconds
        erasure = erasure_consumer(
            self.bus,
            cache or self.cache,
            service=service,
            erase=erase,
            transient=transient,
            stall_seconds=stall,
        )
        export = export_consumer(
            self.bus,
            self.export_parts,
            service=service,
            gather=gather,
            transient=transient,
            stall_seconds=stall,
        )
        return replace(
            parts,
            checks={
                **parts.checks,
                "erasure": erasure.health_check(erasure_health_name(service)),
                "export": export.health_check(export_health_name(service)),
            },
            start_background=[*parts.start_background, erasure.start, export.start],
            on_stop=[erasure.stop, export.stop, *parts.on_stop],
        )

    @property
    def limiter(self) -> Limiter:
        """Per-caller concurrency limits: shared on Redis, or in-process without REDIS_URL."""
        with self._lock:
            if self._limiter is None:
                if self.settings.redis_url:
                    self._limiter = RedisLimiter(self.settings.redis_url)
                else:
                    self._limiter = InProcessLimiter()
            return self._limiter

    @property
    def llm(self) -> LLM:
        """The model client the agents share (disabled without OPENAI_API_KEY)."""
        limiter = self.limiter  # outside the lock: the properties take it too
        if self.settings.openai_api_key:
            # With a model, every call asks the consent records: open (and migrate) them
            # now rather than on a student's first question. Without one, never.
            _ = self.consent
        with self._lock:
            if self._llm is None:
                from services.kit.llm import LLM

                model_use = model_use_allowed(lambda: self.consent)
                self._llm = LLM(self.settings, limiter, model_use=model_use)
            return self._llm

    def describe(self) -> dict[str, str]:
        """Which backend each adapter uses, for the start-up banner."""
        return {
            "postgres": "DATABASE_URL" if self.settings.database_url else "embedded (pgserver)",
            "kafka": "KAFKA_BOOTSTRAP_SERVERS"
            if self.settings.kafka_bootstrap_servers
            else "in-process bus",
            "redis": "REDIS_URL" if self.settings.redis_url else "in-process cache",
            "llm": "OPENAI_API_KEY" if self.settings.openai_api_key else "offline engines",
        }

    def close(self) -> None:
        # First the audit records still queued, to the bus (which then flushes them).
        self.audit.close()
        with self._lock:
            for db in self._databases:
                db.close()
            if self._bus is not None:
                self._bus.close()
            if self._cache is not None:
                self._cache.close()
            if self._windows is not None:
                self._windows.close()
            if self._limiter is not None:
                self._limiter.close()
