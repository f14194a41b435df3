"""Browsing backups outside Ansible: the catalog of backup disks and mapping/mounting them (CLI and REST API)."""
