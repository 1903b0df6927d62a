"""Sphinx configuration of nova-disk-tuning's documentation.

Built by ``make docs`` (and ``tox -e docs``) with warnings as errors. The
configuration reference is generated from the options themselves
(``oslo_config.sphinxext``), the release notes from ``releasenotes/notes``
(``reno.sphinxext``) and the tuning rules by ``nova_disk_tuning/policy/rules.py``.
"""

project = "nova-disk-tuning"
copyright = "2026, nova-disk-tuning developers"

extensions = [
    "openstackdocstheme",
    "oslo_config.sphinxext",
    "reno.sphinxext",
]

# openstackdocstheme: where the sources live, for its "report a bug" and
# "edit this page" links.
openstackdocs_repo_name = "openstack/nova-disk-tuning"
openstackdocs_use_storyboard = False
openstackdocs_bug_project = "nova-disk-tuning"
openstackdocs_bug_tag = "docs"
openstackdocs_auto_name = False

html_theme = "openstackdocs"
html_static_path: list[str] = []
html_title = "nova-disk-tuning"

master_doc = "index"
exclude_patterns = ["bench/guest/**/*.md", "bench/*.md"]
pygments_style = "native"
# Every cross-reference must resolve.
nitpicky = True
