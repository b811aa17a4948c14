"""``cinema mail``: the mail the user service left in a directory (``CINEMA_MAIL_URL``
``file://``, what ``cinema up`` uses: ``DATA_DIR/mail``), read as a person would. The newest
mail, to one address when ``--to`` is given; ``--link`` prints only its registration link.
Mail leaves a moment after the call that queued it (services/user/mail_relay.py), so when
there is none yet it waits for one, ``--wait`` seconds at most.
"""

from __future__ import annotations

import email
import email.policy
import pathlib
import re
import sys
import time
from email.message import EmailMessage

#: A registration link in a mail: the front door's address, then the token.
LINK = re.compile(r"(\S+)/verify#token=([A-Za-z0-9_-]+)")


def messages(directory: pathlib.Path, to: str | None = None) -> list[EmailMessage]:
    """Every mail in ``directory`` (to ``to`` only, when given: trimmed, in any case),
    oldest first (the files are named by the time they were written)."""
    wanted = to.strip().lower() if to is not None else None
    found = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if wanted is None or str(message["To"]).strip().lower() == wanted:
            found.append(message)
    return found


def link(message: EmailMessage) -> str | None:
    """The registration link in ``message``; None in a notice."""
    found = LINK.search(message.get_content())
    return found.group(0) if found else None


def main(
    data_dir: pathlib.Path, to: str | None, *, link_only: bool, wait_seconds: float = 5.0
) -> int:
    directory = data_dir / "mail"
    deadline = time.monotonic() + wait_seconds
    while not (found := messages(directory, to)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not found:
        whom = f" to {to}" if to else ""
        print(f"cinema mail: no mail{whom} in {directory}", file=sys.stderr)
        return 1
    newest = found[-1]
    if link_only:
        url = link(newest)
        if url is None:
            print(f"cinema mail: the newest mail{' to ' + to if to else ''} has no link "
                  f"({newest['Subject']})", file=sys.stderr)  # fmt: skip
            return 1
        print(url)
        return 0
    for header in ("Date", "From", "To", "Subject"):
        print(f"{header}: {newest[header]}")
    print()
    print(newest.get_content().rstrip("\n"))
    return 0
