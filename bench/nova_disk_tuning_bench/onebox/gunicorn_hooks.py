"""gunicorn settings for the one-box's API services (``gunicorn -c python:<this module>``)."""

import sys


def post_fork(server: object, worker: object) -> None:
    # Nova's WSGI entry point parses sys.argv as its own command line, and
    # gunicorn's options are no Nova options ("unrecognized arguments").
    del sys.argv[1:]
