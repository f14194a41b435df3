# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # Ceph access options, named as ceph.automation names them, plus ceph_conf.
    DOCUMENTATION = r"""
options:
  cluster:
    description:
      - Name of the Ceph cluster as the Ceph CLI understands it (C(--cluster)).
      - Selects C(/etc/ceph/CLUSTER.conf) when O(ceph_conf) is not given.
    type: str
    default: ceph
  ceph_client:
    description:
      - Ceph client id used for every rbd call (C(--id)), without the C(client.) prefix.
      - A restricted user with C(profile rbd) caps is enough.
    type: str
    default: admin
  keyring:
    description:
      - Path of the keyring of O(ceph_client) on the node that runs the module.
      - The key itself never appears on a command line.
    type: path
  ceph_conf:
    description:
      - Path of the Ceph configuration file on the node that runs the module.
    type: path
"""
