"""Configuration: every option parses, bad values fail in one clear line."""

import pytest
from oslo_config import cfg

from nova_disk_tuning import conf as ndt_conf
from nova_disk_tuning import exception
from nova_disk_tuning.cmd import main as cli
from nova_disk_tuning.conf import opts


def _write(tmp_path, text):
    path = tmp_path / "nova.conf"
    path.write_text(text)
    return str(path)


def test_every_option_has_help_and_parses_with_defaults(conf):
    for group, options in opts.list_opts():
        name = group if isinstance(group, str) else group.name
        section = conf if name == "DEFAULT" else conf[name]
        for opt in options:
            assert opt.help and len(opt.help.strip()) > 20, f"[{name}] {opt.name} needs help"
            getattr(section, opt.dest)


def test_nova_names_and_groups(conf):
    assert conf.preallocate_images == "none"
    assert conf.use_cow_images is True
    assert conf.force_raw_images is True
    assert conf.libvirt.images_type == "default"
    assert conf.libvirt.volume_clear == "zero"
    assert conf.disk_tuning.aio_mode == "auto"


@pytest.mark.parametrize("value", ["none", "space", "performance"])
def test_preallocate_images_values(tmp_path, value):
    conf = ndt_conf.new_conf([_write(tmp_path, f"[DEFAULT]\npreallocate_images = {value}\n")])
    assert conf.preallocate_images == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[DEFAULT]\npreallocate_images = fast\n", ["preallocate_images", "'fast'", "performance"]),
        ("[libvirt]\nvolume_clear = wipe\n", ["[libvirt] volume_clear", "'wipe'", "shred"]),
        ("[disk_tuning]\naio_mode = fastest\n", ["[disk_tuning] aio_mode", "io_uring"]),
        ("[libvirt]\nvolume_clear_size = lots\n", ["volume_clear_size", "lots"]),
        ("[disk_tuning]\nconvert_coroutines = 99\n", ["convert_coroutines", "99"]),
    ],
)
def test_bad_values_name_option_value_and_allowed(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(exception.InvalidConfig) as info:
        ndt_conf.new_conf([path])
    message = str(info.value)
    for fragment in [*expected, path]:
        assert fragment in message


def test_cli_reports_bad_value_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "[DEFAULT]\npreallocate_images = fast\n")
    status = cli.main(["--config-file", path, "probe", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1, err
    assert "preallocate_images" in err[0] and "'fast'" in err[0] and "Traceback" not in err[0]


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(exception.InvalidConfig, match="--config-file"):
        ndt_conf.new_conf([str(tmp_path / "absent.conf")])


def test_overrides_do_not_leak_between_confs(make_conf):
    first = make_conf(DEFAULT={"preallocate_images": "space"})
    second = make_conf()
    assert first.preallocate_images == "space"
    assert second.preallocate_images == "none"
    assert isinstance(first, cfg.ConfigOpts) and first is not second


def _choice_names(group: str, name: str) -> set[str]:
    from nova_disk_tuning.conf import opts

    for found_group, options in opts.list_opts():
        if getattr(found_group, "name", found_group) == group:
            for opt in options:
                if opt.dest == name:
                    return {c if isinstance(c, str) else c[0] for c in opt.type.choices}
    raise AssertionError(f"no option {group}.{name}")


def test_option_choices_are_libvirts_and_the_policys_words():
    """One vocabulary per value set: the options take libvirt's own values.

    conf sits below domxml (which holds what libvirt's schema allows), so the
    two are tied here rather than by an import.
    """
    from nova_disk_tuning.domxml import disk_values

    assert _choice_names("libvirt", "hw_disk_discard") == set(disk_values.DISK_DISCARD_MODES)
    assert _choice_names("disk_tuning", "detect_zeroes") == set(disk_values.DISK_DETECT_ZEROES)
    assert _choice_names("disk_tuning", "aio_mode") == {
        *disk_values.DISK_IO_MODES,
        "auto",
        "default",
    }
    assert _choice_names("disk_tuning", "convert_source_cache") <= {
        *disk_values.DISK_CACHE_MODES,
        "auto",
    }


def test_one_size_formatter_for_readers_one_for_arguments():
    from nova_disk_tuning.common import units

    assert units.human_size(512) == "512 B"
    assert units.human_size(units.GiB // 2) == "512.0 MiB"
    assert units.human_size(3 * units.GiB // 2) == "1.5 GiB"
    assert units.compact_size(10 * units.GiB) == "10G"
    assert units.compact_size(4096, lower=True) == "4k"
    assert units.compact_size(1000) == "1000"
    for value in (10 * units.GiB, 512 * units.MiB, 4096, 1000):
        assert units.parse_size(units.compact_size(value)) == value
