# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The web console: server-rendered pages under /ui/ over the same operations as the JSON API.

session.py: the login session (cookie), the gate in front of every /ui/ path, CSRF, the security
headers. pages.py: the pages and forms.
"""

PREFIX = "/ui"


def is_console_path(path: str) -> bool:
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")
