"""One nova.conf for Nova and the plugin: shared options mean the same to both."""

import os
import tempfile
import unittest

from nova.conf import CONF as NOVA_CONF
from oslo_config import cfg, generator

from nova_disk_tuning.conf import compute, default, libvirt
from nova_disk_tuning.nova import conf as plugin_conf


class SharedOptionsTest(unittest.TestCase):
    # The one shared option whose choices differ on purpose: Nova refuses
    # "performance", which [disk_tuning] preallocate_images carries instead.
    WIDER_CHOICES = {("DEFAULT", "preallocate_images")}

    def test_every_option_read_from_nova_groups_is_novas(self):
        nova = NOVA_CONF  # every option nova-compute registers, read only
        problems = []
        for module in (default, compute, libvirt):
            for group, opts in module.list_opts().items():
                name = group if isinstance(group, str) else group.name
                for opt in opts:
                    try:
                        theirs = nova._get_opt_info(opt.dest, None if name == "DEFAULT" else name)[
                            "opt"
                        ]
                    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                        problems.append(f"[{name}] {opt.dest}: Nova has no such option")
                        continue
                    if type(theirs.type) is not type(opt.type):
                        problems.append(f"[{name}] {opt.dest}: type {theirs.type} vs {opt.type}")
                    ours_choices = set(getattr(opt.type, "choices", None) or ())
                    nova_choices = set(getattr(theirs.type, "choices", None) or ())
                    if (name, opt.dest) in self.WIDER_CHOICES:
                        self.assertLessEqual(nova_choices, ours_choices)
                    elif ours_choices and not ours_choices <= nova_choices:
                        problems.append(f"[{name}] {opt.dest}: {ours_choices - nova_choices}")
        self.assertEqual([], problems)

    def test_address_space_limit_has_novas_default_and_type(self):
        nova = NOVA_CONF
        ours = {o.dest: o for o in libvirt.libvirt_opts}["images_address_space_limit"]
        theirs = nova._get_opt_info("images_address_space_limit", "libvirt")["opt"]
        self.assertEqual(theirs.default, ours.default)
        self.assertIs(type(theirs.type), type(ours.type))
        # Both say GiB (the unit lives only in the help text).
        self.assertIn("GiB", ours.help)
        self.assertIn("gigabytes", theirs.help)

    def test_disk_tuning_group_registers_into_nova_once(self):
        nova = cfg.ConfigOpts()
        self.assertNotIn("disk_tuning", nova)
        plugin_conf.register_opts(nova)
        plugin_conf.register_opts(nova)  # idempotent, as on a driver restart
        nova([], default_config_files=[])
        self.assertIsNone(nova.disk_tuning.preallocate_images)
        self.assertEqual(1, nova.disk_tuning.iothreads)

    def test_a_foreign_option_of_the_same_name_is_refused(self):
        nova = cfg.ConfigOpts()
        nova.register_opt(cfg.StrOpt("iothreads"), group="disk_tuning")
        with self.assertRaises(plugin_conf.OptionClash):
            plugin_conf.register_opts(nova)

    def test_plugin_adds_no_option_to_novas_groups(self):
        self.assertEqual(["disk_tuning"], [group for group, _ in plugin_conf.list_opts()])

    def test_the_generator_renders_the_plugins_options_beside_novas(self):
        # The entry point as oslo-config-generator loads it, with Nova's own namespace.
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "nova.conf.sample")
            namespaces = ["--namespace", "nova.conf", "--namespace", "nova_disk_tuning.nova"]
            generator.main([*namespaces, "--output-file", out])
            with open(out) as sample:
                text = sample.read()
        self.assertIn("[disk_tuning]", text)
        self.assertIn("#preallocate_images", text.split("[disk_tuning]", 1)[1])
        self.assertIn("[libvirt]", text)
