"""The plugin's one error hierarchy.

Every message says what failed, where (path, option, value) and what to do.
Nova's convention: ``msg_fmt`` is formatted with the keyword arguments.
"""


class NovaDiskTuningException(Exception):
    msg_fmt = "An unknown error occurred."

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # A missing keyword must not hide the original failure.
                message = f"{self.msg_fmt} {kwargs!r}"
        self.message = message
        super().__init__(message)


# Configuration -------------------------------------------------------------


class InvalidConfig(NovaDiskTuningException):
    msg_fmt = "Invalid configuration: %(reason)s"


class InvalidConfigValue(NovaDiskTuningException):
    msg_fmt = (
        "Invalid value %(value)r for %(attribute)s of %(element)s: allowed values are %(allowed)s."
    )


class InvalidFlavorExtraSpec(NovaDiskTuningException):
    msg_fmt = "Invalid flavor extra spec %(key)s=%(value)r: %(reason)s"


class PluginNotFound(NovaDiskTuningException):
    msg_fmt = (
        "No %(kind)s named %(name)r is installed (entry-point group "
        "%(group)s). Installed: %(available)s. Check %(option)s."
    )


class PluginLoadError(NovaDiskTuningException):
    msg_fmt = (
        "The %(kind)s %(name)r (%(entry_point)s) is installed but cannot be "
        "loaded: %(reason)s. Reinstall or fix the package that provides it."
    )


# Storage -------------------------------------------------------------------


class StorageError(NovaDiskTuningException):
    msg_fmt = "Storage operation %(operation)s failed on %(path)s: %(reason)s"


class InsufficientStorage(StorageError):
    msg_fmt = (
        "Not enough space to allocate %(path)s: %(wanted)d bytes wanted, "
        "%(free)d bytes free on its file system. Free some space or use "
        "another instances_path; nothing was left behind."
    )


class InvalidRange(StorageError):
    msg_fmt = "Invalid range on %(path)s: %(reason)s"


# Images --------------------------------------------------------------------


class ImageError(NovaDiskTuningException):
    msg_fmt = "Image operation failed on %(path)s: %(reason)s"


class ImageNotFound(ImageError):
    msg_fmt = "Image %(path)s does not exist. Check the path or the image id."


class ImageUnacceptable(ImageError):
    msg_fmt = "Image %(path)s is unacceptable: %(reason)s"


class QemuImgError(ImageError):
    msg_fmt = "qemu-img %(command)s failed on %(path)s: %(reason)s"


class ImageLimitExceeded(QemuImgError):
    msg_fmt = (
        "qemu-img %(command)s on %(path)s exceeded its resource limits "
        "(%(limits)s); the image is rejected. If the image is trusted and "
        "large, raise [libvirt] images_cpu_time_limit / "
        "images_address_space_limit."
    )


class ConvertLimitExceeded(QemuImgError):
    msg_fmt = (
        "qemu-img convert of %(path)s used the %(seconds)d CPU seconds allowed "
        "for a source that allocates %(allocated)d bytes and was stopped; the "
        "image is rejected. If the image is trusted, raise [disk_tuning] "
        "convert_cpu_time_per_gib (0: no limit)."
    )


class InputUnreadable(NovaDiskTuningException):
    msg_fmt = "%(what)s %(path)s cannot be read: %(reason)s"


# locks --------------------------------------------------------------------


class LockTimeout(NovaDiskTuningException):
    msg_fmt = (
        "Gave up after %(seconds).0f s waiting for %(what)s, %(holder)s. Wait for it "
        "to finish, or raise [disk_tuning] lock_wait_timeout (0: wait as long as it takes)."
    )


# libvirt and instances -----------------------------------------------------


class InvalidDiskConfig(NovaDiskTuningException):
    msg_fmt = "Invalid disk configuration for %(disk)s: %(reason)s"


class DiskNotFound(InvalidDiskConfig):
    """The file or device a disk names does not exist."""


class VolumeDriverError(NovaDiskTuningException):
    msg_fmt = "Volume driver %(driver)s cannot attach the volume: %(reason)s"


class InvalidConnectionInfo(VolumeDriverError):
    msg_fmt = (
        "Volume driver %(driver)s cannot attach volume %(volume)s: its connection_info "
        "is invalid: %(reason)s"
    )


class HypervisorError(NovaDiskTuningException):
    msg_fmt = "libvirt at %(uri)s: %(reason)s"


class InstanceNotFound(NovaDiskTuningException):
    msg_fmt = "Instance %(name)s not found. `nova-disk-tuning list` shows the instances."


class InstanceExists(NovaDiskTuningException):
    msg_fmt = "Instance %(name)s already exists. Destroy it first or choose another name."


class InstanceNotReady(NovaDiskTuningException):
    msg_fmt = "Instance %(name)s is %(state)s: %(what)s"
