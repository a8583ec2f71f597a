"""The error a user fixes by changing the command (exit code 2).

Below the command line, so that the modules it runs (`flows.recovery`,
`flows.topics`) raise it without importing `flows.cli`, which sits on top.
"""

from __future__ import annotations


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""
