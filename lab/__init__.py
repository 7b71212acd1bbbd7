"""Boot appliance images in QEMU and drive them like the howto's operator would."""
