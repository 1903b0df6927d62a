"""What the tests under Nova's harness share: images in the fake Glance, the API config."""

import os
import sys


def api_paste():
    """Nova's functional ConfFixture looks for api-paste.ini beside the nova
    package; pip installs it under the environment's etc/nova."""
    return os.path.join(sys.prefix, "etc", "nova", "api-paste.ini")


class _Reader:
    def __init__(self, data):
        self.data = data

    def read(self, *args):
        data, self.data = self.data, b""
        return data


def upload_image(glance, image_id, data, disk_format, properties=None):
    """Store ``data`` (bytes) as an active image in Nova's fake Glance."""
    glance.create(
        None,
        {
            "id": image_id,
            "name": image_id,
            "status": "active",
            "container_format": {"aki": "aki", "ari": "ari"}.get(disk_format, "bare"),
            "disk_format": disk_format,
            "size": len(data),
            "min_disk": 0,
            "min_ram": 0,
            "properties": properties or {},
        },
        data=_Reader(data),
    )
