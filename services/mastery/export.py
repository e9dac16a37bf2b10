"""ExportStudentData as a long-running operation (AIP-151), coordinated here (ADR 0010).

Starting an export records the operation and the `StudentExportRequested`
announcement in one transaction (the outbox relays it). Each service in
`ERASING_SERVICES` (every one that holds student data) writes its part into the kit's
export parts (services/kit/export.py). Reading the operation brings it up to date with
the parts delivered so far; once every service has delivered, it is done, and its
response (a `StudentDataExport`) is the manifest. The archive is built from the parts
when it is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime

from learnflow.events.v1 import events_pb2
from learnflow.mastery.v1 import mastery_pb2

from services.kit.bus import STUDENT_EXPORT
from services.kit.erasure import ERASING_SERVICES
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.export import EXPORT_TTL, ExportParts, Part, export_name
from services.mastery.convert import packed, timestamp, unpack
from services.mastery.engine import MasteryEngine
from services.mastery.store import OutboxMessage

log = logging.getLogger("learnflow.mastery.export")

OPERATION_PREFIX = "operations/export-"
ARCHIVE_FORMAT = "learnflow.student-data-export/v1"
ARCHIVE_CONTENT_TYPE = "application/zip"


def _file(service: str) -> str:
    return f"{service}.json"


def _record_counts(part: Part) -> dict[str, int]:
    return {kind: len(records) for kind, records in part.records.items()}


def _part(part: Part) -> mastery_pb2.ExportedPart:
    return mastery_pb2.ExportedPart(
        service=part.service,
        file=_file(part.service),
        record_counts=_record_counts(part),
        collect_time=timestamp(part.collected_at),
    )


class Exports:
    def __init__(
        self,
        engine: MasteryEngine,
        parts: ExportParts,
        services: Sequence[str] = ERASING_SERVICES,
    ) -> None:
        self._engine = engine
        self._parts = parts
        self._services = tuple(services)

    def start(self, tenant: str, student_id: str, requested_by: str, guardian: str) -> str:
        """Export a student of `tenant` from every service; the operation's name."""
        export_id = uuid.uuid4().hex
        name = f"{OPERATION_PREFIX}{export_id}"
        now = datetime.now(UTC)
        export = export_name(student_id, export_id)
        metadata = mastery_pb2.ExportStudentDataMetadata(
            pending_services=self._services,
            create_time=timestamp(now),
            export=export,
            guardian=guardian,
        )
        announcement = events_pb2.StudentExportRequested(
            student_id=student_id,
            tenant=tenant,
            export=export,
            requested_by=requested_by,
            request_time=timestamp(now),
        )
        self._engine.start_announced_operation(
            tenant,
            name,
            requested_by,
            packed(metadata),
            OutboxMessage(
                STUDENT_EXPORT, student_id, announcement.SerializeToString(), tenant=tenant
            ),
        )
        log.info("export started", extra={"export": export, "tenant": tenant})
        return name

    def refresh(self, tenant: str, name: str) -> None:
        """Bring an export's operation up to date with the parts delivered so far (any
        other operation is left alone)."""
        if not name.startswith(OPERATION_PREFIX):
            return

        def change(
            raw_metadata: bytes, raw_response: bytes | None
        ) -> tuple[bytes, bytes | None, bool] | None:
            metadata = mastery_pb2.ExportStudentDataMetadata()
            unpack(raw_metadata, metadata)
            if not metadata.pending_services:
                return None
            collected = self._parts.collected(tenant, metadata.export)
            arrived = sorted(
                (s for s in metadata.pending_services if s in collected),
                key=lambda s: collected[s],
            )
            if not arrived:
                return None
            pending = [s for s in metadata.pending_services if s not in collected]
            del metadata.pending_services[:]
            metadata.pending_services.extend(pending)
            metadata.collected_services.extend(arrived)
            if pending:
                return packed(metadata), raw_response, False
            return packed(metadata), packed(self._manifest(tenant, metadata)), True

        self._engine.change_operation(tenant, name, change)

    def _manifest(
        self, tenant: str, metadata: mastery_pb2.ExportStudentDataMetadata
    ) -> mastery_pb2.StudentDataExport:
        student_id = metadata.export.split("/")[1]
        parts = self._parts.parts(tenant, metadata.export, student_id)
        created = metadata.create_time.ToDatetime(tzinfo=UTC)
        return mastery_pb2.StudentDataExport(
            name=metadata.export,
            parts=[_part(p) for p in parts],
            create_time=metadata.create_time,
            complete_time=timestamp(max(p.collected_at for p in parts)),
            expire_time=timestamp(created + EXPORT_TTL),
            guardian=metadata.guardian,
        )

    def archive(self, tenant: str, student_id: str, export: str) -> bytes:
        """The finished export as a zip archive: `manifest.json` and a file per service."""
        parts = self._parts.parts(tenant, export, student_id)
        if not parts:
            raise NotFound(f"{export} does not exist or has expired", metadata={"name": export})
        missing = set(self._services) - {p.service for p in parts}
        if missing:
            raise FailedPrecondition(
                f"{export} is not finished: waiting for {', '.join(sorted(missing))}",
                metadata={"name": export},
            )
        buffer = io.BytesIO()
        files = []
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for part in parts:
                content = json.dumps(part.records, indent=1, sort_keys=True).encode()
                archive.writestr(_file(part.service), content)
                files.append(
                    {
                        "service": part.service,
                        "file": _file(part.service),
                        "record_counts": _record_counts(part),
                        "collect_time": part.collected_at.isoformat(),
                        "sha256": hashlib.sha256(content).hexdigest(),
                    }
                )
            manifest = {
                "format": ARCHIVE_FORMAT,
                "export": export,
                "tenant": tenant,
                "student": f"students/{student_id}",
                "expire_time": min(p.expires_at for p in parts).isoformat(),
                "parts": files,
            }
            archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        return buffer.getvalue()
