"""A real SMTP server for the tests: accepts every message on 127.0.0.1:PORT
and writes each one, as received, to DIR/<n>.eml.

    python3 tests/support/smtp_sink.py PORT DIR [STALL_SECONDS]

Recipients containing "reject" are refused for good (550); those containing
"busy" are refused once for now (450), the reply echoing the address, as
many servers do, and taken at the next try. With
STALL_SECONDS, the server holds every message that long before answering
during its first STALL_SECONDS of life (an SMTP server that stalls).
"""
import asyncio
import itertools
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder, stall):
        self.folder = folder
        self.counter = itertools.count(1)
        self.stall_until = time.monotonic() + stall
        self.refused_once = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "reject" in address:
            return "550 5.1.1 mailbox unavailable"
        if "busy" in address and address not in self.refused_once:
            self.refused_once.add(address)
            return f"450 4.2.1 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        wait = self.stall_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        n = next(self.counter)
        tmp = os.path.join(self.folder, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.folder, f"{n}.eml"))
        return "250 OK"


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    stall = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    os.makedirs(folder, exist_ok=True)
    controller = Controller(Sink(folder, stall), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
