"""Child process for tests/test_uids.py: print N uids made by this process."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iolinker.settings")

import django  # noqa: E402

django.setup()

from snowflake import SnowflakeGenerator  # noqa: E402

from workflows import ids  # noqa: E402

count, barrier = int(sys.argv[1]), sys.argv[2]
fixed_instance = int(sys.argv[3]) if len(sys.argv) > 3 else None
if fixed_instance is None:
    ids.next_uid()  # lease before the start line, like a warmed-up server
    make = ids.next_uid
else:
    # What the library does without leasing: every process on one number.
    generator = SnowflakeGenerator(fixed_instance, epoch=ids.EPOCH_MS)

    def make():
        while (uid := next(generator)) is None:
            pass
        return uid


# Ready; wait for the parent's start file so that every child makes its uids at once.
open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
while not os.path.exists(os.path.join(barrier, "go")):
    time.sleep(0.0005)
uids = [make() for _ in range(count)]
print(json.dumps({"instance": ids.current_instance(), "uids": uids}))
