import setuptools

# Nova imports a compute driver as ``nova.virt.<compute_driver>`` and nothing
# else, so the package ships one module inside Nova's namespace:
# nova/virt/disk_tuning/__init__.py (nova/ and nova/virt/ themselves stay
# Nova's: no __init__.py of theirs is in this distribution). pbr's [files]
# packages only takes top-level directories, so the shim is added here.
NOVA_SHIM = "nova.virt.disk_tuning"


class Distribution(setuptools.Distribution):
    def finalize_options(self):
        super().finalize_options()
        if self.packages is not None and NOVA_SHIM not in self.packages:
            self.packages.append(NOVA_SHIM)


setuptools.setup(setup_requires=["pbr>=6.0.0"], pbr=True, distclass=Distribution)
