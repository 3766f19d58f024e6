"""
The smallest soft device: every request goes unchanged to the node below.
Copy it and override a method to start your own.

SPDX-License-Identifier: GPL-2.0-or-later
"""

from softdev import BlockDevice


class Passthrough(BlockDevice):
    pass
