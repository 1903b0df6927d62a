"""The instance directories under ``[DEFAULT] instances_path``, and how a spawn claims one.

A spawn must never leave something ``list`` cannot show and ``destroy``
cannot remove, even when it is killed with SIGKILL. So the directory comes
into being whole: a directory stage (:mod:`~nova_disk_tuning.common.staging`)
gets the record (state ``building``, the owner's pid) and the stage's lock
file, which the spawn holds with ``flock`` for as long as it runs, and only
then is renamed to ``<uuid>``. From then on the record lists every disk
before it is made (by the names its backend announces), and every record is
written whole. A building record
whose lock nobody holds is a spawn that died: ``list`` says ``building,
process gone`` and ``destroy`` removes it. A stage left by a kill before the
rename holds nothing but the record, and the next claim removes it.

Directories without our ``instance.json`` (Nova's own instances, if the path
is shared) are never listed or touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator

from oslo_config import cfg
from oslo_log import log as logging

from nova_disk_tuning import exception
from nova_disk_tuning.agent.imagebackend.base import is_disk_name
from nova_disk_tuning.agent.record import BUILDING, CREATED, DiskEntry, InstanceRecord
from nova_disk_tuning.common import staging, textfile
from nova_disk_tuning.common.files import fsync_dir

LOG = logging.getLogger(__name__)

RECORD = "instance.json"
GUEST_XML = "libvirt.xml"
CONSOLE_LOG = "console.log"
# Boot files a spawn copies in (as Nova does).
BOOT_FILES = ("kernel", "ramdisk")
# What the project makes in an instance directory besides the disks.
OURS = frozenset({RECORD, GUEST_XML, CONSOLE_LOG, staging.LOCK, *BOOT_FILES})


class SpawnClaim:
    """A claimed instance directory; the flock on its stage's lock file says "alive"."""

    def __init__(self, store: InstanceStore, record: InstanceRecord, stage: staging.Stage) -> None:
        self.store = store
        self.record = record
        self._stage = stage

    @property
    def directory(self) -> str:
        return self.store.instance_dir(self.record.uuid)

    def add_disk(self, entry: DiskEntry) -> None:
        """Record a disk (replacing its announced entry), so destroy finds it after a kill."""
        self.record.disks = [d for d in self.record.disks if d.target != entry.target]
        self.record.disks.append(entry)
        self.store.write_record(self.record)

    def drop_disk(self, target: str) -> None:
        """Forget the entry of ``target``: its create failed and removed what it made."""
        kept = [d for d in self.record.disks if d.target != target]
        if len(kept) != len(self.record.disks):
            self.record.disks = kept
            self.store.write_record(self.record)

    def release(self) -> None:
        self._stage.release()


class InstanceStore:
    """The instance directories under ``[DEFAULT] instances_path``."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @property
    def root(self) -> str:
        instances_path: str = self.conf.instances_path
        return os.path.abspath(instances_path)

    def instance_dir(self, uuid: str) -> str:
        return os.path.join(self.root, uuid)

    def xml_path(self, uuid: str) -> str:
        return os.path.join(self.instance_dir(uuid), GUEST_XML)

    def record_path(self, uuid: str) -> str:
        return os.path.join(self.instance_dir(uuid), RECORD)

    def console_path(self, uuid: str) -> str:
        return os.path.join(self.instance_dir(uuid), CONSOLE_LOG)

    # Reading -----------------------------------------------------------------

    def records(self) -> Iterator[InstanceRecord]:
        """Every record (building ones too), sorted by name."""
        if not os.path.isdir(self.root):
            return iter(())
        found = []
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith("."):
                continue
            record = self.read(entry)
            if record is not None:
                found.append(record)
        return iter(sorted(found, key=lambda r: r.name))

    def read(self, uuid: str) -> InstanceRecord | None:
        """The record of ``uuid`` (state ``broken`` if it cannot be read); None if not ours."""
        path = self.record_path(uuid)
        try:
            record = json.loads(textfile.read_text(path, "instance record"))
        except (FileNotFoundError, NotADirectoryError):
            return None  # not ours
        except exception.InputUnreadable as exc:
            return InstanceRecord.broken(uuid, str(exc))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
            return InstanceRecord.broken(uuid, f"{path}: {reason}")
        try:
            found = InstanceRecord.from_dict(record) if isinstance(record, dict) else None
        except (TypeError, ValueError):
            found = None
        if found is None or found.uuid != uuid:
            return InstanceRecord.broken(uuid, f"{path}: not a record of instance {uuid}")
        return found

    def find(self, name: str) -> InstanceRecord:
        """The instance whose uuid is ``name``, else the one named ``name``."""
        records = list(self.records())
        for record in records:
            if record.uuid == name:
                return record
        for record in records:
            if record.name == name:
                return record
        raise exception.InstanceNotFound(name=name)

    def exists(self, name: str) -> bool:
        return any(record.name == name for record in self.records())

    def read_xml(self, uuid: str) -> str:
        try:
            return textfile.read_text(self.xml_path(uuid), "domain XML")
        except exception.InputUnreadable as exc:
            raise exception.InstanceNotFound(name=f"{uuid} ({exc})") from None
        except OSError as exc:
            raise exception.InstanceNotFound(
                name=f"{uuid} ({self.xml_path(uuid)} unreadable: {exc.strerror})"
            ) from None

    # Spawn state ---------------------------------------------------------------

    def status(self, record: InstanceRecord) -> str:
        """``building``, ``building, process gone``, ``broken`` or ``created``."""
        if record.state != BUILDING:
            return record.state
        return BUILDING if self.owner_alive(record.uuid) else f"{BUILDING}, process gone"

    def owner_alive(self, uuid: str) -> bool:
        """Whether a live spawn holds the lock of this instance directory."""
        return staging.owner_alive(self.instance_dir(uuid))

    def claim(self, record: InstanceRecord) -> SpawnClaim:
        """Create ``<uuid>/`` whole, with a building record; refuse if it exists."""
        name, uuid = record.name, record.uuid
        self.check_root()
        # Claims of spawns killed before their rename, whatever their uuid.
        staging.sweep(self.root)
        target = self.instance_dir(uuid)
        if os.path.lexists(target):
            raise exception.InstanceExists(
                name=f"{name} (the instance directory {target} exists: uuid {uuid} is taken)"
            )
        stage = staging.Stage(target, directory=True).open()
        try:
            record.state, record.pid = BUILDING, os.getpid()
            # The stage is ours alone until it is published: written in place.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(os.path.join(stage.path, RECORD), flags, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(_dumps(record))
                handle.flush()
                os.fsync(handle.fileno())  # durable before the directory is published
            stage.publish()
        except FileExistsError:
            stage.close()
            raise exception.InstanceExists(name=f"{name} ({target} appeared meanwhile)") from None
        except BaseException:
            stage.close()
            raise
        return SpawnClaim(self, record, stage)

    def check_root(self) -> None:
        """instances_path must be a writable directory: say so before any work."""
        root = self.root
        try:
            os.makedirs(root, exist_ok=True)
        except FileExistsError:
            raise exception.InvalidConfig(
                reason=f"[DEFAULT] instances_path {root} is not a directory; "
                "point it at a directory"
            ) from None
        except OSError as exc:
            raise exception.InvalidConfig(
                reason=f"[DEFAULT] instances_path {root} cannot be created: {exc.strerror}"
            ) from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise exception.InvalidConfig(
                reason=f"[DEFAULT] instances_path {root} is not writable by this user "
                "(or its file system is read-only)"
            )

    # Writing -------------------------------------------------------------------

    def write_record(self, record: InstanceRecord) -> None:
        staging.write_atomic(self.record_path(record.uuid), _dumps(record))

    def write(self, record: InstanceRecord, xml: str) -> None:
        """Write libvirt.xml, then the finished record (state created), each atomically."""
        staging.write_atomic(self.xml_path(record.uuid), xml)
        record.state, record.pid = CREATED, None
        self.write_record(record)

    def remove(self, uuid: str) -> list[str]:
        """Remove what the project made in ``<uuid>/``, then the directory if nothing is left.

        Only names the project makes there go: the record, ``libvirt.xml``,
        the console log, the spawn's lock, copied kernel and ramdisk, the
        stages of its records, and file disks under the names the image
        backends give them (the record's disks are their backends' to remove,
        before this; these are what a record that cannot be read leaves). Nothing is
        followed (a symlink is removed, not its target), no directory is
        entered but a stage of ours, and nothing on another file system is
        touched: a file system mounted inside, or a file someone else put
        there, stays, and so does the directory then. Returns what stayed.
        """
        directory = self.instance_dir(uuid)
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            device = os.fstat(dir_fd).st_dev
            kept = []
            for name in sorted(os.listdir(dir_fd)):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if st.st_dev != device:
                    kept.append(name)  # a mount point: another file system
                elif stat.S_ISDIR(st.st_mode):
                    if not (staging.is_stage(name) and staging.remove_stage_at(dir_fd, name)):
                        kept.append(name)
                elif name in OURS or is_disk_name(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dir_fd)
                else:
                    kept.append(name)
        finally:
            os.close(dir_fd)
        if kept:
            LOG.warning(
                "Kept %s: it holds what this project did not make there: %s",
                directory,
                ", ".join(kept),
            )
            return kept
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)
        with contextlib.suppress(OSError):
            fsync_dir(self.root)
        return []


def _dumps(record: InstanceRecord) -> str:
    return json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
