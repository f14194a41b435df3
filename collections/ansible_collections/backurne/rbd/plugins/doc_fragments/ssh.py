# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # How the backup node reaches a live node: data is pulled over ssh, never via the controller.
    DOCUMENTATION = r"""
options:
  live_host:
    description:
      - Address of the live node (a Ceph client of the live cluster) that the backup node pulls from over ssh.
    type: str
    required: true
  live_ceph:
    description:
      - Ceph access options on the live node, as paths on that node.
    type: dict
    default: {}
    suboptions:
      cluster:
        description: Ceph cluster name on the live node.
        type: str
        default: ceph
      ceph_client:
        description: Ceph client id on the live node.
        type: str
        default: admin
      keyring:
        description: Keyring path on the live node.
        type: path
      ceph_conf:
        description: Ceph configuration file on the live node.
        type: path
  ssh_user:
    description: User on the live node.
    type: str
    default: root
  ssh_port:
    description: ssh port of the live node.
    type: int
    default: 22
  ssh_identity_file:
    description: Private key on the backup node used to reach the live node.
    type: path
  ssh_known_hosts_file:
    description:
      - known_hosts file on the backup node. When given, host keys are checked strictly against it.
    type: path
  ssh_cipher:
    description:
      - ssh cipher for the data stream. C(aes128-gcm@openssh.com) is the fastest on CPUs with AES-NI.
    type: str
  ssh_control_master:
    description:
      - Reuse one ssh connection per live node (ControlMaster/ControlPersist) for all calls of a run.
    type: bool
    default: true
"""
