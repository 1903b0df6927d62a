"""qemu-img, image safety checks and the base-image cache."""
