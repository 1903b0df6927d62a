#!/bin/bash
# DevStack plugin of nova-disk-tuning: the drop-in compute driver in the
# compute service. DevStack sources this file with the phase as arguments
# ("stack install", "stack post-config", "unstack", "clean").

function install_nova_disk_tuning {
    # Into Nova's own environment, editable: the package and its one module
    # in Nova's namespace (nova/virt/disk_tuning), which Nova loads as
    # compute_driver = disk_tuning.LibvirtDriver.
    setup_develop "$NOVA_DISK_TUNING_DIR"
}

function configure_nova_disk_tuning {
    # nova.conf is what start_nova_compute copies into the compute service's
    # own file; a file already made gets the same lines.
    if [[ ! -f "${NOVA_CONF:-}" ]]; then
        die $LINENO "nova-disk-tuning: NOVA_CONF ('${NOVA_CONF:-}') is not a file at post-config: enable the plugin after Nova (n-cpu) in local.conf"
    fi
    local conf
    for conf in "$NOVA_CONF" "${NOVA_CPU_CONF:-}"; do
        [[ -n "$conf" && -f "$conf" ]] || continue
        iniset "$conf" DEFAULT compute_driver disk_tuning.LibvirtDriver
        iniset "$conf" disk_tuning aio_mode "$NOVA_DISK_TUNING_AIO_MODE"
        if [[ -n "${NOVA_DISK_TUNING_PREALLOCATE:-}" ]]; then
            iniset "$conf" disk_tuning preallocate_images "$NOVA_DISK_TUNING_PREALLOCATE"
        fi
    done
}

function check_nova_disk_tuning_settings {
    # The choices of the options they set (nova_disk_tuning/conf/disk_tuning.py):
    # a wrong value stops stack.sh here, not nova-compute later.
    case "${NOVA_DISK_TUNING_PREALLOCATE:-}" in
        ""|none|space|performance) ;;
        *) die $LINENO "NOVA_DISK_TUNING_PREALLOCATE='$NOVA_DISK_TUNING_PREALLOCATE' is not one of none, space, performance (or empty): fix local.conf" ;;
    esac
    case "${NOVA_DISK_TUNING_AIO_MODE:-}" in
        auto|io_uring|native|threads|default) ;;
        *) die $LINENO "NOVA_DISK_TUNING_AIO_MODE='$NOVA_DISK_TUNING_AIO_MODE' is not one of auto, io_uring, native, threads, default: fix local.conf" ;;
    esac
}

if is_service_enabled n-cpu; then
    if [[ "${VIRT_DRIVER:-}" != "libvirt" ]]; then
        die $LINENO "nova-disk-tuning needs VIRT_DRIVER=libvirt (it is '${VIRT_DRIVER:-}'): set it in local.conf"
    fi
    check_nova_disk_tuning_settings
    phase="${1:-}" step="${2:-}"
    if [[ "$phase" == "stack" && "$step" == "install" ]]; then
        echo_summary "Installing nova-disk-tuning into Nova's environment"
        install_nova_disk_tuning
    elif [[ "$phase" == "stack" && "$step" == "post-config" ]]; then
        echo_summary "Configuring nova-compute for nova-disk-tuning"
        configure_nova_disk_tuning
    fi
    if [[ "$phase" == "clean" ]]; then
        pip_uninstall nova-disk-tuning
    fi
fi
