"""Deployment: device bundles (bundle.py, readme.py, bundle_files/) and device checks (device_check.py, emulator/)."""
